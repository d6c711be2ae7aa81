// Package auth is QleetOS's stand-in for github.com/abbot/go-http-auth: HTTP basic and
// digest authentication helpers with the API that Traefik's auth middlewares use.
package auth

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"log"
	"net/http"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// SecretProvider returns the stored secret (a password hash for basic auth, the HA1
// value for digest auth) of user in realm, or "" when the user is unknown.
type SecretProvider func(user, realm string) string

// BasicAuth answers unauthenticated requests with a basic-auth challenge.
type BasicAuth struct {
	Realm   string
	Secrets SecretProvider
}

// RequireAuth replies 401 with a basic-auth challenge for the realm.
func (a *BasicAuth) RequireAuth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("WWW-Authenticate", fmt.Sprintf("Basic realm=%q", a.Realm))
	http.Error(w, http.StatusText(http.StatusUnauthorized), http.StatusUnauthorized)
}

// CheckSecret reports whether password matches secret, an htpasswd-style hash:
// bcrypt ($2a$, $2b$, $2y$), {SHA} or MD5-crypt ($apr1$, $1$). Any other form never
// matches and is logged as unsupported.
func CheckSecret(password, secret string) bool {
	switch {
	case strings.HasPrefix(secret, "$2a$"), strings.HasPrefix(secret, "$2b$"), strings.HasPrefix(secret, "$2y$"):
		return bcrypt.CompareHashAndPassword([]byte(secret), []byte(password)) == nil
	case strings.HasPrefix(secret, "{SHA}"):
		sum := sha1.Sum([]byte(password))
		return equal("{SHA}"+base64.StdEncoding.EncodeToString(sum[:]), secret)
	case strings.HasPrefix(secret, "$apr1$"):
		return equal(md5Crypt(password, saltOf(secret, "$apr1$"), "$apr1$"), secret)
	case strings.HasPrefix(secret, "$1$"):
		return equal(md5Crypt(password, saltOf(secret, "$1$"), "$1$"), secret)
	default:
		kind := "plain text or unknown"
		if strings.HasPrefix(secret, "$") {
			if end := strings.IndexByte(secret[1:], '$'); end >= 0 {
				kind = secret[:end+2]
			}
		}
		log.Printf("go-http-auth shim: unsupported password hash (%s); use bcrypt, {SHA} or $apr1$", kind)
		return false
	}
}

func equal(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// saltOf returns the salt of an MD5-crypt hash: at most 8 characters after the magic,
// up to the next '$'.
func saltOf(secret, magic string) string {
	salt := secret[len(magic):]
	if i := strings.IndexByte(salt, '$'); i >= 0 {
		salt = salt[:i]
	}
	if len(salt) > 8 {
		salt = salt[:8]
	}
	return salt
}

const cryptAlphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// md5Crypt computes the MD5-based crypt of Poul-Henning Kamp (magic "$1$") and its
// Apache variant (magic "$apr1$"), which differ only in the magic string.
func md5Crypt(password, salt, magic string) string {
	pw := []byte(password)

	alternate := md5.New()
	alternate.Write(pw)
	alternate.Write([]byte(salt))
	alternate.Write(pw)
	alt := alternate.Sum(nil)

	h := md5.New()
	h.Write(pw)
	h.Write([]byte(magic))
	h.Write([]byte(salt))
	for n := len(pw); n > 0; n -= md5.Size {
		h.Write(alt[:min(n, md5.Size)])
	}
	for n := len(pw); n > 0; n >>= 1 {
		if n&1 == 1 {
			h.Write([]byte{0})
		} else {
			h.Write(pw[:1])
		}
	}
	sum := h.Sum(nil)

	for round := range 1000 {
		r := md5.New()
		if round%2 == 1 {
			r.Write(pw)
		} else {
			r.Write(sum)
		}
		if round%3 != 0 {
			r.Write([]byte(salt))
		}
		if round%7 != 0 {
			r.Write(pw)
		}
		if round%2 == 1 {
			r.Write(sum)
		} else {
			r.Write(pw)
		}
		sum = r.Sum(nil)
	}

	var out strings.Builder
	out.WriteString(magic)
	out.WriteString(salt)
	out.WriteByte('$')
	encode := func(v uint32, chars int) {
		for range chars {
			out.WriteByte(cryptAlphabet[v&0x3f])
			v >>= 6
		}
	}
	for _, g := range [][3]int{{0, 6, 12}, {1, 7, 13}, {2, 8, 14}, {3, 9, 15}, {4, 10, 5}} {
		encode(uint32(sum[g[0]])<<16|uint32(sum[g[1]])<<8|uint32(sum[g[2]]), 4)
	}
	encode(uint32(sum[11]), 2)
	return out.String()
}
