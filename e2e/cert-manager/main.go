// Command cert-manager-controller runs cert-manager's controllers, taken from the
// github.com/cert-manager/cert-manager module, out of cluster for the QleetOS test
// environment, where kwok only simulates cert-manager's pods.
//
// It is a thin main of our own: cert-manager's controller main lives in a separate
// module that the module proxy does not serve, and its Venafi issuer needs a module
// the proxy refuses. This build runs the SelfSigned, CA and ACME issuers, the
// Certificate and CertificateRequest controllers and the ingress-shim. Vault, Venafi,
// the Gateway API shims and the experimental CertificateSigningRequest controllers
// are left out, as are leader election, the healthz server and profiling.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/api/resource"
	logsapi "k8s.io/component-base/logs/api/v1"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager"
	"github.com/cert-manager/cert-manager/pkg/controller"
	dnsutil "github.com/cert-manager/cert-manager/pkg/issuer/acme/dns/util"
	logf "github.com/cert-manager/cert-manager/pkg/logs"
	"github.com/cert-manager/cert-manager/pkg/util"

	// Each of these registers its controller or issuer in an init function.
	_ "github.com/cert-manager/cert-manager/pkg/controller/acmechallenges"
	_ "github.com/cert-manager/cert-manager/pkg/controller/acmeorders"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificate-shim/ingresses"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/acme"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/metrics"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/acme"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

// config holds the command line; flag names and defaults follow cert-manager's controller.
type config struct {
	opts           controller.ContextOptions
	leaderElect    bool
	metricsAddress string
	workers        int
	http01         struct{ requestCPU, requestMemory, limitsCPU, limitsMemory string }
	logging        *logsapi.LoggingConfiguration
}

func parseFlags(args []string) (*config, error) {
	c := &config{logging: logsapi.NewLoggingConfiguration()}
	o := &c.opts
	fs := pflag.NewFlagSet("cert-manager-controller", pflag.ContinueOnError)
	fs.StringVar(&o.APIServerHost, "master", "", "API server address (overrides the kubeconfig)")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "path to a kubeconfig (needed out of cluster)")
	fs.Float32Var(&o.KubernetesAPIQPS, "kube-api-qps", 20, "client QPS when API Priority and Fairness is off")
	fs.IntVar(&o.KubernetesAPIBurst, "kube-api-burst", 50, "client burst when API Priority and Fairness is off")
	fs.StringVar(&o.Namespace, "namespace", "", "watch only this namespace (all when empty)")
	fs.StringVar(&o.ClusterResourceNamespace, "cluster-resource-namespace", "kube-system", "namespace of the Secrets that ClusterIssuers refer to")
	fs.BoolVar(&o.ClusterIssuerAmbientCredentials, "cluster-issuer-ambient-credentials", true, "let ClusterIssuers use ambient credentials")
	fs.BoolVar(&o.IssuerAmbientCredentials, "issuer-ambient-credentials", false, "let Issuers use ambient credentials")
	fs.BoolVar(&c.leaderElect, "leader-elect", false, "accepted for compatibility; this build has no leader election, so it must be false")
	fs.StringVar(&c.metricsAddress, "metrics-listen-address", "127.0.0.1:9402", "host:port of the Prometheus metrics endpoint")
	fs.IntVar(&c.workers, "concurrent-workers", 5, "workers per controller")
	fs.IntVar(&o.MaxConcurrentChallenges, "max-concurrent-challenges", 60, "ACME challenges processed at once")

	fs.StringVar(&o.HTTP01SolverImage, "acme-http01-solver-image", "quay.io/jetstack/cert-manager-acmesolver:"+util.AppVersion, "image of the ACME HTTP-01 solver pods")
	fs.StringVar(&c.http01.requestCPU, "acme-http01-solver-resource-request-cpu", "10m", "solver pod CPU request")
	fs.StringVar(&c.http01.requestMemory, "acme-http01-solver-resource-request-memory", "64Mi", "solver pod memory request")
	fs.StringVar(&c.http01.limitsCPU, "acme-http01-solver-resource-limits-cpu", "100m", "solver pod CPU limit")
	fs.StringVar(&c.http01.limitsMemory, "acme-http01-solver-resource-limits-memory", "64Mi", "solver pod memory limit")
	fs.BoolVar(&o.ACMEHTTP01SolverRunAsNonRoot, "acme-http01-solver-run-as-non-root", true, "run solver pods as non-root")
	fs.StringSliceVar(&o.HTTP01SolverNameservers, "acme-http01-solver-nameservers", nil, "host:port DNS servers for HTTP-01 self checks")
	fs.StringSliceVar(&o.DNS01Nameservers, "dns01-recursive-nameservers", nil, "DNS servers for DNS-01 self checks")
	recursiveOnly := fs.Bool("dns01-recursive-nameservers-only", false, "query only the recursive nameservers in DNS-01 self checks")
	fs.DurationVar(&o.DNS01CheckRetryPeriod, "dns01-check-retry-period", 10*time.Second, "wait between ACME propagation checks")

	fs.StringVar(&o.DefaultIssuerName, "default-issuer-name", "", "ingress-shim: issuer when an Ingress names none")
	fs.StringVar(&o.DefaultIssuerKind, "default-issuer-kind", "Issuer", "ingress-shim: kind of the default issuer")
	fs.StringVar(&o.DefaultIssuerGroup, "default-issuer-group", cmapi.GroupName, "ingress-shim: group of the default issuer")
	fs.StringSliceVar(&o.DefaultAutoCertificateAnnotations, "auto-certificate-annotations", []string{"kubernetes.io/tls-acme"}, "ingress-shim: annotations that request a certificate")
	fs.StringSliceVar(&o.ExtraCertificateAnnotations, "extra-certificate-annotations", nil, "ingress-shim: annotations added to the Certificates it creates")

	fs.BoolVar(&o.EnableOwnerRef, "enable-certificate-owner-ref", false, "make each Certificate the owner of its Secret")
	fs.StringSliceVar(&o.CopiedAnnotationPrefixes, "copied-annotation-prefixes",
		[]string{"*", "-kubectl.kubernetes.io/", "-fluxcd.io/", "-argocd.argoproj.io/"},
		"annotation prefixes copied from Certificates to CertificateRequests and Orders")
	fs.DurationVar(&o.CertificateRequestMinimumBackoffDuration, "certificate-request-minimum-backoff-duration", time.Hour, "first back-off after a failed request")
	fs.DurationVar(&o.CertificateRequestMaximumBackoffDuration, "certificate-request-maximum-backoff-duration", 32*time.Hour, "longest back-off after failed requests")
	logf.AddFlagsNonDeprecated(c.logging, fs)

	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if c.leaderElect {
		return nil, errors.New("--leader-elect=true is not supported by this build; run a single instance")
	}
	o.DNS01CheckAuthoritative = !*recursiveOnly
	if len(o.DNS01Nameservers) == 0 {
		o.DNS01Nameservers = dnsutil.RecursiveNameservers
	}
	quantities := []struct {
		flag string
		in   string
		out  *resource.Quantity
	}{
		{"acme-http01-solver-resource-request-cpu", c.http01.requestCPU, &o.HTTP01SolverResourceRequestCPU},
		{"acme-http01-solver-resource-request-memory", c.http01.requestMemory, &o.HTTP01SolverResourceRequestMemory},
		{"acme-http01-solver-resource-limits-cpu", c.http01.limitsCPU, &o.HTTP01SolverResourceLimitsCPU},
		{"acme-http01-solver-resource-limits-memory", c.http01.limitsMemory, &o.HTTP01SolverResourceLimitsMemory},
	}
	for _, q := range quantities {
		parsed, err := resource.ParseQuantity(q.in)
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", q.flag, err)
		}
		*q.out = parsed
	}
	return c, nil
}

func main() {
	logf.InitLogs()
	defer logf.FlushLogs()

	c, err := parseFlags(os.Args[1:])
	if errors.Is(err, pflag.ErrHelp) {
		return
	}
	if err == nil {
		err = logf.ValidateAndApply(c.logging)
	}
	if err == nil {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err = run(ctx, c)
		stop()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cert-manager-controller:", err)
		logf.FlushLogs()
		os.Exit(1)
	}
}

// run starts the metrics server and every registered controller, then the shared
// informers, and returns when ctx is cancelled or any of them fails.
func run(ctx context.Context, c *config) error {
	log := logf.FromContext(ctx, "controller")
	log.Info("starting cert-manager controller", "version", util.AppVersion)

	group, ctx := errgroup.WithContext(ctx)
	factory, err := controller.NewContextFactory(ctx, c.opts)
	if err != nil {
		return err
	}
	base, err := factory.Build()
	if err != nil {
		return err
	}

	listener, err := (&net.ListenConfig{}).Listen(ctx, "tcp", c.metricsAddress)
	if err != nil {
		return fmt.Errorf("listening for metrics on %s: %w", c.metricsAddress, err)
	}
	cm := base.SharedInformerFactory.Certmanager().V1()
	base.Metrics.SetupACMECollector(base.SharedInformerFactory.Acme().V1().Challenges().Lister())
	base.Metrics.SetupCertificateCollector(cm.Certificates().Lister())
	base.Metrics.SetupIssuerCollector(cm.Issuers().Lister())
	base.Metrics.SetupClusterIssuerCollector(cm.ClusterIssuers().Lister())
	metrics := base.Metrics.NewServer(listener)
	group.Go(func() error {
		if err := metrics.Serve(listener); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	group.Go(func() error {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return metrics.Shutdown(shutdown) // ctx is done by now
	})

	names := make([]string, 0, len(controller.Known()))
	for name := range controller.Known() {
		names = append(names, name)
	}
	sort.Strings(names)
	log.Info("enabled controllers", "controllers", names)
	for _, name := range names {
		loop, err := controller.Known()[name](factory)
		if err != nil {
			return fmt.Errorf("creating controller %s: %w", name, err)
		}
		group.Go(func() error { return loop.Run(c.workers, ctx) })
	}

	base.SharedInformerFactory.Start(ctx.Done())
	base.KubeSharedInformerFactory.Start(ctx.Done())
	base.HTTP01ResourceMetadataInformersFactory.Start(ctx.Done())
	err = group.Wait()
	base.HTTP01ResourceMetadataInformersFactory.Shutdown()
	base.KubeSharedInformerFactory.Shutdown()
	base.SharedInformerFactory.Shutdown()
	return err
}
