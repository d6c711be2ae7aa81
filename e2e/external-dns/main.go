// A thin external-dns for the QleetOS test environment.
//
// It is upstream external-dns (sigs.k8s.io/external-dns, pinned in go.mod) with the
// same flags, sources, plan, policies and registries, but linked with only the
// providers the tests use: rfc2136 (a local BIND) and inmemory. The upstream
// binary cannot be built from the module proxy alone: its exoscale provider needs
// github.com/exoscale/egoscale/v3 at a version the proxy refuses, and its
// provider factory links every cloud SDK. The controller loop below is adapted
// from upstream's controller/controller.go and controller/execute.go
// (Apache-2.0, The Kubernetes Authors) without the Prometheus gauges, which live
// in that package next to the provider factory.
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"sync"
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
	"sigs.k8s.io/external-dns/pkg/events"
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

	var emitter events.EventEmitter
	eventsCfg := events.NewConfig(events.WithEmitEvents(cfg.EmitEvents), events.WithDryRun(cfg.DryRun))
	if eventsCfg.IsEnabled() {
		kube, err := sCfg.ClientGenerator().KubeClient()
		if err != nil {
			return err
		}
		ec, err := events.NewEventController(kube.EventsV1(), eventsCfg)
		if err != nil {
			return err
		}
		ec.Run(ctx)
		emitter = ec
	}

	c := &controller{
		source:               src,
		registry:             reg,
		policy:               policy,
		interval:             cfg.Interval,
		domainFilter:         domainFilter,
		managedRecordTypes:   cfg.ManagedDNSRecordTypes,
		excludeRecordTypes:   cfg.ExcludeDNSRecordTypes,
		minEventSyncInterval: cfg.MinEventSyncInterval,
		txtOwnerOld:          cfg.TXTOwnerOld,
		events:               emitter,
	}
	if cfg.Once {
		return c.runOnce(ctx)
	}
	if cfg.UpdateEvents {
		c.source.AddEventHandler(ctx, func() { c.scheduleRunOnce(time.Now()) })
	}
	c.scheduleRunOnce(time.Now())
	return c.run(ctx)
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

type controller struct {
	source               source.Source
	registry             registry.Registry
	policy               plan.Policy
	interval             time.Duration
	domainFilter         endpoint.DomainFilterInterface
	managedRecordTypes   []string
	excludeRecordTypes   []string
	minEventSyncInterval time.Duration
	txtOwnerOld          string
	events               events.EventEmitter

	mu        sync.Mutex
	nextRunAt time.Time
	lastRunAt time.Time
}

// runOnce is one reconciliation: read the registry's records, the sources' desired
// endpoints, calculate the plan and apply it.
func (c *controller) runOnce(ctx context.Context) error {
	c.mu.Lock()
	c.lastRunAt = time.Now()
	c.mu.Unlock()

	current, err := c.registry.Records(ctx)
	if err != nil {
		return err
	}
	ctx = context.WithValue(ctx, provider.RecordsContextKey, current)
	desired, err := c.source.Endpoints(ctx)
	if err != nil {
		return err
	}
	desired, err = c.registry.AdjustEndpoints(desired)
	if err != nil {
		return fmt.Errorf("adjusting endpoints: %w", err)
	}
	pl := (&plan.Plan{
		Policies:       []plan.Policy{c.policy},
		Current:        current,
		Desired:        desired,
		DomainFilter:   endpoint.MatchAllDomainFilters{c.domainFilter, c.registry.GetDomainFilter()},
		ManagedRecords: c.managedRecordTypes,
		ExcludeRecords: c.excludeRecordTypes,
		OwnerID:        c.registry.OwnerID(),
		OldOwnerID:     c.txtOwnerOld,
	}).Calculate()
	if !pl.Changes.HasChanges() {
		log.Info("All records are already up to date")
		return nil
	}
	if err := c.registry.ApplyChanges(ctx, pl.Changes); err != nil {
		c.emit(pl.Changes, events.RecordError)
		return err
	}
	c.emit(pl.Changes, events.RecordReady)
	return nil
}

func (c *controller) emit(ch *plan.Changes, reason events.Reason) {
	if c.events == nil {
		return
	}
	for _, ep := range ch.Create {
		c.events.Add(events.NewEventFromEndpoint(ep, events.ActionCreate, reason))
	}
	for _, ep := range ch.UpdateNew {
		c.events.Add(events.NewEventFromEndpoint(ep, events.ActionUpdate, reason))
	}
	deleteReason := events.RecordDeleted
	if reason == events.RecordError {
		deleteReason = events.RecordError
	}
	for _, ep := range ch.Delete {
		c.events.Add(events.NewEventFromEndpoint(ep, events.ActionDelete, deleteReason))
	}
}

// scheduleRunOnce brings the next run forward to at most 5 s from now, but no
// sooner than minEventSyncInterval after the last run (upstream's rule).
func (c *controller) scheduleRunOnce(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := now.Add(5 * time.Second)
	if c.nextRunAt.Before(next) {
		next = c.nextRunAt
	}
	if floor := c.lastRunAt.Add(c.minEventSyncInterval); floor.After(next) {
		next = floor
	}
	c.nextRunAt = next
}

func (c *controller) shouldRunOnce(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.Before(c.nextRunAt) {
		return false
	}
	c.nextRunAt = now.Add(c.interval)
	return true
}

func (c *controller) run(ctx context.Context) error {
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	softErrors := 0
	for {
		if c.shouldRunOnce(time.Now()) {
			if err := c.runOnce(ctx); err != nil {
				if !errors.Is(err, provider.SoftError) {
					return fmt.Errorf("failed to do run once: %w", err)
				}
				softErrors++
				log.Errorf("Failed to do run once: %v (consecutive soft errors: %d)", err, softErrors)
			} else {
				if softErrors > 0 {
					log.Infof("Reconciliation succeeded after %d consecutive soft errors", softErrors)
				}
				softErrors = 0
			}
		}
		select {
		case <-ticker.C:
		case <-ctx.Done():
			log.Info("Terminating main controller loop")
			return nil
		}
	}
}
