// QleetOS's own stand-in for github.com/abbot/go-http-auth (Traefik builds against the
// fork github.com/containous/go-http-auth, which the module proxy refuses with 403).
// Only the API that Traefik's pkg/middlewares/auth uses; written from scratch.
module github.com/abbot/go-http-auth

go 1.26.0

require golang.org/x/crypto v0.56.0
