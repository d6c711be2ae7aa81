package auth

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	nonceLifetime = 5 * time.Minute
	maxNonces     = 10000
)

// DigestAuth checks RFC 2617 digest credentials (MD5, qop "auth" or none) against HA1
// secrets and issues challenges with server nonces.
type DigestAuth struct {
	Realm   string
	Opaque  string
	Secrets SecretProvider

	mu     sync.Mutex
	nonces map[string]*nonceState
}

type nonceState struct {
	issued time.Time
	lastNC uint64
}

// NewDigestAuthenticator returns a DigestAuth for realm whose secrets are HA1 values,
// hex md5("user:realm:password").
func NewDigestAuthenticator(realm string, secrets SecretProvider) *DigestAuth {
	return &DigestAuth{
		Realm:   realm,
		Opaque:  randomToken(),
		Secrets: secrets,
		nonces:  map[string]*nonceState{},
	}
}

// DigestAuthParams parses the parameters of a "Digest ..." Authorization header value;
// it returns nil when the value is not a digest credential.
func DigestAuthParams(authorization string) map[string]string {
	scheme, rest, ok := strings.Cut(strings.TrimSpace(authorization), " ")
	if !ok || !strings.EqualFold(scheme, "Digest") {
		return nil
	}
	params := map[string]string{}
	for rest = strings.TrimSpace(rest); rest != ""; {
		key, after, found := strings.Cut(rest, "=")
		if !found {
			return nil
		}
		key = strings.ToLower(strings.TrimSpace(key))
		after = strings.TrimLeft(after, " \t")
		var value string
		if strings.HasPrefix(after, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(after) && after[i] != '"'; i++ {
				if after[i] == '\\' && i+1 < len(after) {
					i++
				}
				b.WriteByte(after[i])
			}
			if i >= len(after) {
				return nil // unterminated quoted string
			}
			value, after = b.String(), after[i+1:]
		} else if end := strings.IndexByte(after, ','); end >= 0 {
			value, after = strings.TrimSpace(after[:end]), after[end:]
		} else {
			value, after = strings.TrimSpace(after), ""
		}
		params[key] = value
		after = strings.TrimLeft(after, " \t")
		if after != "" && after[0] != ',' {
			return nil
		}
		rest = strings.TrimLeft(strings.TrimPrefix(after, ","), " \t")
	}
	return params
}

// CheckAuth returns the authenticated user name, or "" when the request carries no
// valid credentials. When the credentials are right but their nonce is unknown,
// expired or replayed, it also returns a pointer to "stale".
func (a *DigestAuth) CheckAuth(r *http.Request) (string, *string) {
	p := DigestAuthParams(r.Header.Get("Authorization"))
	if p == nil || p["username"] == "" || p["nonce"] == "" || p["response"] == "" {
		return "", nil
	}
	if p["realm"] != a.Realm || p["uri"] != r.RequestURI {
		return "", nil
	}
	if alg := p["algorithm"]; alg != "" && !strings.EqualFold(alg, "MD5") {
		return "", nil
	}
	if opaque, ok := p["opaque"]; ok && opaque != a.Opaque {
		return "", nil
	}
	ha1 := a.Secrets(p["username"], a.Realm)
	if ha1 == "" {
		return "", nil
	}
	ha2 := md5Hex(r.Method + ":" + p["uri"])
	var expected string
	var nc uint64
	switch p["qop"] {
	case "auth":
		n, err := strconv.ParseUint(p["nc"], 16, 64)
		if err != nil || p["cnonce"] == "" {
			return "", nil
		}
		nc = n
		expected = md5Hex(strings.Join([]string{ha1, p["nonce"], p["nc"], p["cnonce"], "auth", ha2}, ":"))
	case "":
		expected = md5Hex(ha1 + ":" + p["nonce"] + ":" + ha2)
	default:
		return "", nil
	}
	if subtle.ConstantTimeCompare([]byte(expected), []byte(strings.ToLower(p["response"]))) != 1 {
		return "", nil
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	state, known := a.nonces[p["nonce"]]
	if !known || time.Since(state.issued) > nonceLifetime || (p["qop"] == "auth" && nc <= state.lastNC) {
		stale := "stale"
		return "", &stale
	}
	state.lastNC = nc
	return p["username"], nil
}

// RequireAuth replies 401 with a fresh digest challenge.
func (a *DigestAuth) RequireAuth(w http.ResponseWriter, r *http.Request) {
	a.challenge(w, false)
}

// RequireAuthStale replies 401 with a fresh digest challenge marked stale, telling the
// client to retry with the new nonce without asking the user again.
func (a *DigestAuth) RequireAuthStale(w http.ResponseWriter, r *http.Request) {
	a.challenge(w, true)
}

func (a *DigestAuth) challenge(w http.ResponseWriter, stale bool) {
	nonce := a.issueNonce()
	value := fmt.Sprintf(`Digest realm=%q, nonce=%q, opaque=%q, algorithm=MD5, qop="auth"`, a.Realm, nonce, a.Opaque)
	if stale {
		value += ", stale=true"
	}
	w.Header().Set("WWW-Authenticate", value)
	http.Error(w, http.StatusText(http.StatusUnauthorized), http.StatusUnauthorized)
}

func (a *DigestAuth) issueNonce() string {
	nonce := randomToken()
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.nonces == nil {
		a.nonces = map[string]*nonceState{}
	}
	if len(a.nonces) >= maxNonces {
		for n, s := range a.nonces {
			if now.Sub(s.issued) > nonceLifetime {
				delete(a.nonces, n)
			}
		}
		for n := range a.nonces { // still full: forget arbitrary ones
			if len(a.nonces) < maxNonces {
				break
			}
			delete(a.nonces, n)
		}
	}
	a.nonces[nonce] = &nonceState{issued: now}
	return nonce
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func md5Hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}
