// A thin external-dns for the QleetOS test environment.
//
// It is upstream external-dns (sigs.k8s.io/external-dns, pinned in go.mod) with the
// same flags, sources, plan, policies and registries, but linked with only the
// providers the tests use: rfc2136 (a local BIND) and inmemory. The upstream
// binary cannot be built from the module proxy alone: its exoscale provider needs
// github.com/exoscale/egoscale/v3 at a version the proxy refuses, and its
// controller package links every cloud SDK through its provider factory, so the
// sync loop is our own, written against external-dns's plan and registry APIs.
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	log "github.com/sirupsen/logrus"
	_ "k8s.io/client-go/plugin/pkg/client/auth"
	"k8s.io/klog/v2"
	crlog "sigs.k8s.io/controller-runtime/pkg/log"

	"sigs.k8s.io/external-dns/endpoint"
	"sigs.k8s.io/external-dns/pkg/apis/externaldns"
	"sigs.k8s.io/external-dns/pkg/apis/externaldns/validation"
	"sigs.k8s.io/external-dns/plan"
	"sigs.k8s.io/external-dns/provider"
	"sigs.k8s.io/external-dns/provider/inmemory"
	"sigs.k8s.io/external-dns/provider/rfc2136"
	"sigs.k8s.io/external-dns/registry"
	"sigs.k8s.io/external-dns/registry/crd"
	"sigs.k8s.io/external-dns/registry/noop"
	"sigs.k8s.io/external-dns/registry/txt"
	"sigs.k8s.io/external-dns/source"
	"sigs.k8s.io/external-dns/source/annotations"
	"sigs.k8s.io/external-dns/source/wrappers"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context) error {
	cfg := externaldns.NewConfig()
	if err := cfg.ParseFlags(os.Args[1:]); err != nil {
		return fmt.Errorf("flag parsing error: %w", err)
	}
	log.Infof("config: %s", cfg)
	if err := validation.ValidateConfig(cfg); err != nil {
		return fmt.Errorf("config validation failed: %w", err)
	}
	annotations.SetAnnotationPrefix(cfg.AnnotationPrefix)
	if cfg.EnableLegacyAnnotationPrefix {
		annotations.SetLegacyAnnotationPrefix(annotations.LegacyAnnotationPrefix)
	}
	if cfg.LogFormat == "json" {
		log.SetFormatter(&log.JSONFormatter{})
	}
	level, err := log.ParseLevel(cfg.LogLevel)
	if err != nil {
		return err
	}
	log.SetLevel(level)
	if level < log.DebugLevel {
		defer klog.ClearLogger()
		klog.SetLogger(logr.Discard())
	}
	crlog.SetLogger(logr.Discard())
	if cfg.DryRun {
		log.Info("running in dry-run mode. No changes to DNS records will be made.")
	}
	log.Info(externaldns.Banner())

	go serveMetrics(cfg.MetricsAddress)

	sCfg, err := source.NewSourceConfig(cfg)
	if err != nil {
		return err
	}
	src, err := wrappers.Build(ctx, sCfg)
	if err != nil {
		return err
	}
	domainFilter := endpoint.NewDomainFilterWithOptions(
		endpoint.WithDomainFilter(cfg.DomainFilter),
		endpoint.WithDomainExclude(cfg.DomainExclude),
		endpoint.WithRegexDomainFilter(cfg.RegexDomainFilter),
		endpoint.WithRegexDomainExclude(cfg.RegexDomainExclude),
	)

	var p provider.Provider
	switch cfg.Provider {
	case externaldns.ProviderRFC2136:
		p, err = rfc2136.New(ctx, cfg, domainFilter)
	case externaldns.ProviderInMemory:
		p, err = inmemory.New(ctx, cfg, domainFilter)
	default:
		return fmt.Errorf("provider %q is not linked into this build (only %s and %s are)",
			cfg.Provider, externaldns.ProviderRFC2136, externaldns.ProviderInMemory)
	}
	if err != nil {
		return err
	}
	if cfg.ProviderCacheTime > 0 {
		p = provider.NewCachedProvider(p, cfg.ProviderCacheTime)
	}

	var reg registry.Registry
	switch cfg.Registry {
	case externaldns.RegistryTXT:
		reg, err = txt.New(cfg, p)
	case externaldns.RegistryNoop:
		reg, err = noop.New(cfg, p)
	case externaldns.RegistryCRD:
		reg, err = crd.New(cfg, p)
	default:
		return fmt.Errorf("registry %q is not linked into this build (only txt, noop and crd are)", cfg.Registry)
	}
	if err != nil {
		return err
	}

	policy, ok := plan.Policies[cfg.Policy]
	if !ok {
		return fmt.Errorf("unknown policy: %s", cfg.Policy)
	}

	syncer := &recordSync{
		source:   src,
		registry: reg,
		policy:   policy,
		filter:   domainFilter,
		managed:  cfg.ManagedDNSRecordTypes,
		excluded: cfg.ExcludeDNSRecordTypes,
	}
	if cfg.Once {
		return syncer.syncOnce(ctx)
	}
	return syncer.every(ctx, cfg.Interval)
}

func serveMetrics(address string) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("OK"))
	})
	mux.Handle("/metrics", promhttp.Handler())
	log.Fatal(http.ListenAndServe(address, mux))
}

// recordSync makes the DNS zone hold what the sources want: on every tick it reads the
// records the registry owns and the endpoints the sources produce, and applies the plan
// between them.
type recordSync struct {
	source   source.Source
	registry registry.Registry
	policy   plan.Policy
	filter   endpoint.DomainFilterInterface
	managed  []string
	excluded []string
}

func (r *recordSync) syncOnce(ctx context.Context) error {
	owned, err := r.registry.Records(ctx)
	if err != nil {
		return fmt.Errorf("reading the zone: %w", err)
	}
	wanted, err := r.source.Endpoints(context.WithValue(ctx, provider.RecordsContextKey, owned))
	if err != nil {
		return fmt.Errorf("reading the sources: %w", err)
	}
	if wanted, err = r.registry.AdjustEndpoints(wanted); err != nil {
		return fmt.Errorf("adjusting endpoints: %w", err)
	}
	changes := (&plan.Plan{
		Policies:       []plan.Policy{r.policy},
		Current:        owned,
		Desired:        wanted,
		DomainFilter:   endpoint.MatchAllDomainFilters{r.filter, r.registry.GetDomainFilter()},
		ManagedRecords: r.managed,
		ExcludeRecords: r.excluded,
		OwnerID:        r.registry.OwnerID(),
	}).Calculate().Changes
	if !changes.HasChanges() {
		return nil
	}
	log.Infof("applying %d creates, %d updates, %d deletes",
		len(changes.Create), len(changes.UpdateNew), len(changes.Delete))
	return r.registry.ApplyChanges(ctx, changes)
}

// every syncs at once and then each interval until ctx ends; a soft error (a provider
// that is briefly unavailable) is logged and retried at the next tick.
func (r *recordSync) every(ctx context.Context, interval time.Duration) error {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		if err := r.syncOnce(ctx); err != nil {
			if !errors.Is(err, provider.SoftError) {
				return err
			}
			log.Errorf("sync failed, retrying: %v", err)
		}
		select {
		case <-ticker.C:
		case <-ctx.Done():
			return nil
		}
	}
}
