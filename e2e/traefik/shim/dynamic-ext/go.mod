// QleetOS stand-in for Traefik's nested module pkg/config/dynamic/ext, which is not part
// of the github.com/traefik/traefik/v3 module zip and is not served by the module proxy.
module github.com/traefik/traefik/dynamic/ext

go 1.26.0
