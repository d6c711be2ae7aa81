{{- define "qleetos.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "qleetos.labels" -}}
app.kubernetes.io/part-of: qleetos
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{/* NATS credentials of the operator and the gateway: those of the NATS the chart installs, or
read from .Values.nats.auth.secretName. */}}
{{- define "qleetos.natsAuthEnv" -}}
{{- $auth := .Values.nats.auth -}}
{{- if .Values.nats.install.enabled }}
- name: QLEETOS_NATS_USER
  valueFrom: {secretKeyRef: {name: qleetos-nats-auth, key: user}}
- name: QLEETOS_NATS_PASSWORD
  valueFrom: {secretKeyRef: {name: qleetos-nats-auth, key: password}}
{{- else if and $auth.secretName (eq $auth.method "userPassword") }}
- name: QLEETOS_NATS_USER
  valueFrom: {secretKeyRef: {name: {{ $auth.secretName }}, key: {{ $auth.userKey }}}}
- name: QLEETOS_NATS_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ $auth.secretName }}, key: {{ $auth.passwordKey }}}}
{{- else if and $auth.secretName (eq $auth.method "token") }}
- name: QLEETOS_NATS_TOKEN
  valueFrom: {secretKeyRef: {name: {{ $auth.secretName }}, key: {{ $auth.tokenKey }}}}
{{- end }}
{{- if and $auth.secretName (eq $auth.method "creds") }}
- name: QLEETOS_NATS_CREDS
  value: /nats/auth/nats.creds
{{- end }}
{{- if .Values.nats.tls.caSecretName }}
- name: QLEETOS_NATS_TLS_CA
  value: /nats/tls/ca.crt
{{- end }}
{{- end -}}

{{- define "qleetos.natsVolumeMounts" -}}
{{- if and .Values.nats.auth.secretName (eq .Values.nats.auth.method "creds") }}
- {name: nats-creds, mountPath: /nats/auth, readOnly: true}
{{- end }}
{{- if .Values.nats.tls.caSecretName }}
- {name: nats-tls-ca, mountPath: /nats/tls, readOnly: true}
{{- end }}
{{- end -}}

{{- define "qleetos.natsVolumes" -}}
{{- if and .Values.nats.auth.secretName (eq .Values.nats.auth.method "creds") }}
- name: nats-creds
  secret:
    secretName: {{ .Values.nats.auth.secretName }}
    items: [{key: {{ .Values.nats.auth.credsKey }}, path: nats.creds}]
{{- end }}
{{- if .Values.nats.tls.caSecretName }}
- name: nats-tls-ca
  secret:
    secretName: {{ .Values.nats.tls.caSecretName }}
    items: [{key: {{ .Values.nats.tls.caKey }}, path: ca.crt}]
{{- end }}
{{- end -}}

{{/* nats.conf of the NATS the chart installs; `$POD_NAME` comes from each server's environment. */}}
{{- define "qleetos.natsConfig" -}}
server_name: $POD_NAME
port: 4222
http_port: 8222
pid_file: /var/run/nats/nats.pid
lame_duck_duration: 30s
lame_duck_grace_period: 5s
# JetStream takes up to 75 % of the volume (nats.install.storage.size) by default.
jetstream {
  store_dir: /data
}
authorization {
  user: qleetos
  password: {{ .password | quote }}
}
{{- if gt .replicas 1 }}
cluster {
  name: qleetos
  port: 6222
  authorization {
    user: qleetos
    password: {{ .password | quote }}
  }
  routes: [
    {{- range $i := until .replicas }}
    "nats://qleetos:{{ $.password }}@qleetos-nats-{{ $i }}.qleetos-nats-headless.{{ $.namespace }}.svc:6222"
    {{- end }}
  ]
}
{{- end }}
{{- end -}}

{{- /* A PodDisruptionBudget letting a drain take one pod of a component at a time (only
with two or more replicas: with one, a budget would block every drain). Arguments: dict of
"root" (.), "name", "replicas". */}}
{{- define "qleetos.pdb" -}}
{{- if gt (int .replicas) 1 }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  namespace: {{ .root.Release.Namespace }}
  labels: {{- include "qleetos.labels" .root | nindent 4 }}
    app.kubernetes.io/name: {{ .name }}
spec:
  maxUnavailable: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: {{ .name }}
{{- end }}
{{- end }}
