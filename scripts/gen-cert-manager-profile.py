#!/usr/bin/env python3
"""Writes examples/support-services/cert-manager.yaml: the default `tls` profile, with the
CRDs of the pinned cert-manager release (from the module the environment builds it from,
descriptions dropped so the profile stays small) and a local CA issuer.

Usage: python3 scripts/gen-cert-manager-profile.py "$(bash e2e/scripts/cert-manager.sh)"
"""
import glob
import os
import sys

import yaml

VERSION = "v1.21.2"


def strip_descriptions(node):
    if isinstance(node, dict):
        return {k: strip_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def crds(cache_dir):
    found = []
    for path in sorted(glob.glob(os.path.join(cache_dir, "crds", "*.yaml"))):
        for doc in yaml.safe_load_all(open(path)):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                found.append(strip_descriptions(doc))
    if not found:
        sys.exit(f"no CRDs under {cache_dir}/crds: run `bash e2e/scripts/cert-manager.sh` first")
    return found


def controller_objects():
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "cert-manager"}}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "qleetos:cert-manager-controller"},
        "rules": [
            {"apiGroups": ["cert-manager.io", "acme.cert-manager.io"], "resources": ["*"], "verbs": ["*"]},
            {"apiGroups": [""], "resources": ["secrets", "events", "configmaps", "services", "pods"], "verbs": ["*"]},
            {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": ["get", "list", "watch", "update"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["*"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "qleetos:cert-manager-controller"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "qleetos:cert-manager-controller"},
        "subjects": [{"kind": "ServiceAccount", "name": "cert-manager", "namespace": "cert-manager"}],
    }
    tenant_role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": "qleetos:cert-manager-edit",
            "labels": {
                "rbac.authorization.k8s.io/aggregate-to-admin": "true",
                "rbac.authorization.k8s.io/aggregate-to-edit": "true",
            },
        },
        "rules": [
            {"apiGroups": ["cert-manager.io"], "resources": ["certificates", "issuers"],
             "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
            # A CertificateRequest's names are inside its CSR, out of QleetOS's host check:
            # tenants may read them (cert-manager creates them for Certificates), not write them.
            {"apiGroups": ["cert-manager.io"], "resources": ["certificaterequests"],
             "verbs": ["get", "list", "watch"]},
        ],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "cert-manager", "labels": {"app": "cert-manager"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "cert-manager"}},
            "template": {
                "metadata": {"labels": {"app": "cert-manager"}},
                "spec": {
                    "serviceAccountName": "cert-manager",
                    "containers": [{
                        "name": "cert-manager-controller",
                        "image": f"quay.io/jetstack/cert-manager-controller:{VERSION}",
                        "args": [
                            "--cluster-resource-namespace=cert-manager",
                            "--leader-elect=false",
                            "--enable-certificate-owner-ref=true",
                        ],
                    }],
                },
            },
        },
    }
    return [sa, role, binding, tenant_role, deployment]


def issuers():
    selfsigned = {"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
                  "metadata": {"name": "qleetos-selfsigned"}, "spec": {"selfSigned": {}}}
    ca_cert = {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {"name": "qleetos-ca"},
        "spec": {
            "isCA": True,
            "commonName": "QleetOS local CA ($(runtime.name))",
            "secretName": "qleetos-ca",
            "privateKey": {"algorithm": "ECDSA", "size": 256},
            "issuerRef": {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "qleetos-selfsigned"},
        },
    }
    ca = {"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
          "metadata": {"name": "qleetos-ca"}, "spec": {"ca": {"secretName": "qleetos-ca"}}}
    return [selfsigned, ca_cert, ca]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    profile = {
        "apiVersion": "qleetos.io/v1alpha1",
        "kind": "SupportServiceProfile",
        "metadata": {"name": "cert-manager"},
        "spec": {
            "provides": ["tls"],
            "default": True,
            "namespace": "cert-manager",
            "removalPolicy": "WhenUnused",
            "gracePeriodSeconds": 300,
            "workloadObjects": {"certificateIssuer": {"kind": "ClusterIssuer", "name": "qleetos-ca"}},
            "healthChecks": [{"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer", "name": "qleetos-ca", "type": "Ready"}],
            "manifests": crds(sys.argv[1]) + controller_objects() + issuers(),
        },
    }
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(here, "..", "examples", "support-services", "cert-manager.yaml")
    header = (f"# The default `tls` profile: cert-manager {VERSION} with a local CA issuer.\n"
              "# Generated by scripts/gen-cert-manager-profile.py from the release's CRDs; do not edit.\n"
              "# Production: replace the CA issuer with an ACME ClusterIssuer (see docs/design.md).\n")
    with open(out, "w") as f:
        f.write(header)
        f.write(yaml.safe_dump(profile, sort_keys=False, width=120))
    print(f"wrote {os.path.normpath(out)}")


if __name__ == "__main__":
    main()
