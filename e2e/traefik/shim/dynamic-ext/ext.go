// Package ext holds the extension points that Traefik's dynamic configuration embeds
// (dynamic.HTTPConfiguration embeds HTTP, dynamic.Router embeds Router). Open-source
// Traefik adds nothing there, so both are empty structs: they contribute no fields to
// the configuration, its JSON/YAML forms or its deep copies.
package ext

// HTTP is embedded in dynamic.HTTPConfiguration; it carries no configuration.
type HTTP struct{}

// Router is embedded in dynamic.Router; it carries no configuration.
type Router struct{}
