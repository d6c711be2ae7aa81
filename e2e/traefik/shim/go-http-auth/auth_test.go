package auth

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// Hashes made with `openssl passwd` and `openssl sha1 -binary | base64`.
func TestCheckSecret(t *testing.T) {
	cases := []struct {
		password, secret string
		want             bool
	}{
		{"s3cret!", "$apr1$q1eetOS0$OblDxGEMwRRz7GwPxUz4G.", true},
		{"s3cret?", "$apr1$q1eetOS0$OblDxGEMwRRz7GwPxUz4G.", false},
		{"s3cret!", "$1$q1eetOS0$kjo0akVMvqpCeLCFeCX/B/", true},
		{"", "$apr1$ab$S8K6Sgp3W8c9Jb6LxgywZ.", true},
		{"a-much-longer-password-than-sixteen-bytes", "$1$x$zy4hiTff7E0Ipo6HNZjgD.", true},
		{"s3cret!", "{SHA}YWXIkDPDfrJ6I4yV+0kqTJdT5SE=", true},
		{"s3cret", "{SHA}YWXIkDPDfrJ6I4yV+0kqTJdT5SE=", false},
		{"s3cret!", "$6$abc$WZ7Gnjf1jjkgQ8a6E1SwSxoj8.IJdk35hO7ZRL7KQFlLBB6Jc2VycpaTJM..8qzCUFUhA1aXm0nKfEFrZIE9l1", false},
		{"s3cret!", "s3cret!", false},
	}
	for _, c := range cases {
		if got := CheckSecret(c.password, c.secret); got != c.want {
			t.Errorf("CheckSecret(%q, %q) = %v, want %v", c.password, c.secret, got, c.want)
		}
	}

	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret!"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, prefix := range []string{"$2a$", "$2b$", "$2y$"} {
		secret := prefix + string(hash[4:])
		if !CheckSecret("s3cret!", secret) || CheckSecret("nope", secret) {
			t.Errorf("bcrypt %s hash not checked correctly", prefix)
		}
	}
}

func TestBasicRequireAuth(t *testing.T) {
	rec := httptest.NewRecorder()
	(&BasicAuth{Realm: "traefik"}).RequireAuth(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != http.StatusUnauthorized || rec.Header().Get("WWW-Authenticate") != `Basic realm="traefik"` {
		t.Fatalf("got %d %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
	}
}

func TestDigest(t *testing.T) {
	ha1 := md5Hex("alice:traefik:wonderland")
	a := NewDigestAuthenticator("traefik", func(user, realm string) string {
		if user == "alice" && realm == "traefik" {
			return ha1
		}
		return ""
	})

	rec := httptest.NewRecorder()
	a.RequireAuth(rec, httptest.NewRequest(http.MethodGet, "/x?y=1", nil))
	challenge := DigestAuthParams(rec.Header().Get("WWW-Authenticate"))
	if rec.Code != http.StatusUnauthorized || challenge["nonce"] == "" || challenge["qop"] != "auth" {
		t.Fatalf("bad challenge %d %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
	}

	request := func(secretHA1, nc string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/x?y=1", nil)
		ha2 := md5Hex("GET:/x?y=1")
		resp := md5Hex(strings.Join([]string{secretHA1, challenge["nonce"], nc, "c0ffee", "auth", ha2}, ":"))
		r.Header.Set("Authorization", `Digest username="alice", realm="traefik", nonce="`+challenge["nonce"]+
			`", uri="/x?y=1", qop=auth, nc=`+nc+`, cnonce="c0ffee", response="`+resp+`", opaque="`+challenge["opaque"]+`"`)
		return r
	}

	if user, info := a.CheckAuth(request(ha1, "00000001")); user != "alice" || info != nil {
		t.Fatalf("valid credentials: got %q %v", user, info)
	}
	if user, info := a.CheckAuth(request(ha1, "00000001")); user != "" || info == nil || *info != "stale" {
		t.Fatalf("replayed nonce count: got %q %v", user, info)
	}
	if user, _ := a.CheckAuth(request(ha1, "00000002")); user != "alice" {
		t.Fatalf("next nonce count: got %q", user)
	}
	if user, info := a.CheckAuth(request(md5Hex("alice:traefik:wrong"), "00000003")); user != "" || info != nil {
		t.Fatalf("wrong password: got %q %v", user, info)
	}
	if DigestAuthParams("Basic YWxpY2U6eA==") != nil {
		t.Fatal("basic credentials parsed as digest")
	}
}
