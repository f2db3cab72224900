package webhook

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
)

// This file holds SigningKeys, the signing keys of a seller that serves
// many tenants (publishers), each with its own brand.json and its own
// request-signing keys.

// ErrSigningKeyMissing reports a delivery whose tenant has no signing key:
// at acceptance (in a [*ValidationError] for Routing.Tenant, and nothing is
// queued) or when an attempt starts (the delivery fails at once, without a
// request, and its LastError says so). Install the tenant's key
// ([SigningKeys.Set]) and redeliver what failed
// ([Inspector.RedeliverMatching] with [DeliveryFilter.Tenant]).
var ErrSigningKeyMissing = errors.New("webhook: no signing key for the delivery's tenant")

// TenantSigner is a [Signer] that holds keys for many tenants.
// [*RFC9421Signer] is one. Implementations must be safe for concurrent use.
type TenantSigner interface {
	Signer
	// SignTenant signs r for body with tenant's current key, as Sign does
	// for the default tenant "". A tenant without a key is an error
	// matching [ErrSigningKeyMissing].
	SignTenant(r *http.Request, body []byte, tenant string) error
	TenantChecker
}

// TenantChecker reports whether a tenant can be signed for now. Supervisors
// ask their Sender at acceptance when it is one ([*HTTPSender] is), so that
// a delivery for a tenant without a key is refused before it is stored.
type TenantChecker interface {
	// CheckTenant returns nil when tenant has a signing key, else an error
	// matching [ErrSigningKeyMissing] that says why.
	CheckTenant(tenant string) error
}

// SigningKeys holds the request-signing keys of many tenants: for each,
// the keys it publishes in its JWKS and the one of them that signs. The
// tenant "" is the default, for deliveries whose Routing names none.
//
// A key's ID must be distinct across every tenant: buyers find the key by
// its kid, and a buyer that receives from two tenants keys its replay
// cache by kid.
//
// Rotating a tenant's key follows the AdCP order, publish first, then
// sign: [SigningKeys.Publish] the new key and serve the tenant's JWKS with
// it ([SigningKeys.JWKS]); once that JWKS is live, [SigningKeys.Activate]
// it, and every attempt from then on, of new and queued deliveries alike,
// is signed with it (only the signature changes between attempts: the body
// and idempotency key never do); when no buyer needs the old key any more,
// [SigningKeys.Retire] it. A compromised key is retired at once and listed
// in the operator's revocation list (revoked_kids).
//
// SigningKeys is safe for concurrent use. A change takes effect for the
// attempts that start signing after it returns; one already signing when
// Retire or Activate is called may still use the key it looked up.
type SigningKeys struct {
	mu      sync.RWMutex
	tenants map[string]*tenantKeys
	owner   map[string]string // kid -> tenant
}

// tenantKeys are one tenant's published keys, oldest first, and the one
// that signs (nil: none).
type tenantKeys struct {
	published []*SigningKey
	current   *SigningKey
}

// NewSigningKeys returns an empty set of tenants' keys (as the zero
// SigningKeys is).
func NewSigningKeys() *SigningKeys {
	return &SigningKeys{tenants: map[string]*tenantKeys{}, owner: map[string]string{}}
}

// maxTenant bounds a tenant's name (Routing.Tenant).
const maxTenant = 255

// checkTenantName validates a tenant's name, as Routing.Tenant is.
func checkTenantName(field, tenant string) error {
	return checkText(field, tenant, false, maxTenant)
}

// Publish adds key to tenant's published keys without signing with it:
// the first step of a rotation. Publishing a key the tenant publishes
// already does nothing; a key ID another tenant uses, or that this tenant
// uses for other key material, is an error matching [ErrInvalidKey].
func (s *SigningKeys) Publish(tenant string, key *SigningKey) error {
	if err := checkTenantName("tenant", tenant); err != nil {
		return badKey("%v", err)
	}
	if key == nil || key.key == nil || isNil(key.key.Signer) {
		return badKey("Publish got a nil key; load one with ParseJWKSigningKey, ParsePEMSigningKey or GenerateSigningKey")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tenants == nil { // the zero SigningKeys
		s.tenants, s.owner = map[string]*tenantKeys{}, map[string]string{}
	}
	if other, ok := s.owner[key.keyID]; ok {
		if other != tenant {
			return badKey("key ID %q is tenant %q's; key IDs must be distinct across tenants", key.keyID, other)
		}
		for _, k := range s.tenants[tenant].published {
			if k.keyID == key.keyID && !samePublic(k, key) {
				return badKey("tenant %q publishes other key material under key ID %q; give the new key a new ID", tenant, key.keyID)
			}
		}
		return nil
	}
	t := s.tenants[tenant]
	if t == nil {
		t = &tenantKeys{}
		s.tenants[tenant] = t
	}
	t.published = append(t.published, key)
	s.owner[key.keyID] = tenant
	return nil
}

// samePublic reports whether a and b have the same public key.
func samePublic(a, b *SigningKey) bool {
	pa, errA := a.PublicJWK()
	pb, errB := b.PublicJWK()
	return errA == nil && errB == nil && string(pa) == string(pb)
}

// Activate makes the published key keyID sign every attempt for tenant
// from now on. The key the tenant signed with before stays published.
func (s *SigningKeys) Activate(tenant, keyID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tenants[tenant]
	if t != nil {
		for _, k := range t.published {
			if k.keyID == keyID {
				t.current = k
				return nil
			}
		}
	}
	return badKey("tenant %q publishes no key %q; Publish it first (and serve its JWKS) before it signs", tenant, keyID)
}

// Set publishes key for tenant and signs with it from now on: a new
// tenant's first key. For a tenant whose buyers already verify another
// key, Publish first and Activate once the new JWKS is served.
func (s *SigningKeys) Set(tenant string, key *SigningKey) error {
	if err := s.Publish(tenant, key); err != nil {
		return err
	}
	return s.Activate(tenant, key.keyID)
}

// Retire removes the key keyID from tenant's published keys. Retiring the
// key that signs leaves the tenant with none: its attempts then fail with
// [ErrSigningKeyMissing] until a key is activated, which is what an
// emergency revocation wants. Retiring a key the tenant does not publish
// is an error matching [ErrInvalidKey].
func (s *SigningKeys) Retire(tenant, keyID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tenants[tenant]
	if t != nil {
		for i, k := range t.published {
			if k.keyID != keyID {
				continue
			}
			t.published = slices.Delete(t.published, i, i+1)
			if t.current == k {
				t.current = nil
			}
			delete(s.owner, keyID)
			if len(t.published) == 0 {
				delete(s.tenants, tenant)
			}
			return nil
		}
	}
	return badKey("tenant %q publishes no key %q", tenant, keyID)
}

// Current returns the key that signs for tenant, if any.
func (s *SigningKeys) Current(tenant string) (*SigningKey, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if t := s.tenants[tenant]; t != nil && t.current != nil {
		return t.current, true
	}
	return nil, false
}

// algorithms returns the algorithms of the keys that sign, one each.
func (s *SigningKeys) algorithms() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []string
	for _, t := range s.tenants {
		if t.current != nil && !slices.Contains(out, t.current.alg) {
			out = append(out, t.current.alg)
		}
	}
	slices.Sort(out)
	return out
}

// Tenants returns the tenants that publish at least one key, sorted.
func (s *SigningKeys) Tenants() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.tenants))
	for t := range s.tenants {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// Published returns tenant's published keys, oldest first.
func (s *SigningKeys) Published(tenant string) []*SigningKey {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if t := s.tenants[tenant]; t != nil {
		return slices.Clone(t.published)
	}
	return nil
}

// JWKS returns tenant's published public keys as a JWKS, for the jwks_uri
// of the tenant's brand.json agents[] entry: during a rotation, the old
// key and the new one. A tenant with no keys gets an empty set.
func (s *SigningKeys) JWKS(tenant string) ([]byte, error) {
	return PublicJWKS(s.Published(tenant)...)
}

// CheckTenant returns nil when tenant has a key that signs.
func (s *SigningKeys) CheckTenant(tenant string) error {
	if _, ok := s.Current(tenant); ok {
		return nil
	}
	if len(s.Published(tenant)) > 0 {
		return fmt.Errorf("%w: tenant %q publishes keys but none is active; Activate one", ErrSigningKeyMissing, tenant)
	}
	return fmt.Errorf("%w: tenant %q has no key; install one with SigningKeys.Set", ErrSigningKeyMissing, tenant)
}
