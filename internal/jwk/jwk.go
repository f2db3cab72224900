// Package jwk holds the JSON Web Key members (RFC 7517, and AdCP's
// adcp_use) that the seller's key loader and the buyer's JWKS parser both
// read, so the two agree on one shape.
package jwk

// Key is the subset of a JWK the module reads. D is empty in a public key.
type Key struct {
	Kid     string   `json:"kid"`
	Kty     string   `json:"kty"`
	Crv     string   `json:"crv"`
	Alg     string   `json:"alg"`
	Use     string   `json:"use"`
	X       string   `json:"x"`
	Y       string   `json:"y"`
	D       string   `json:"d"`
	AdcpUse string   `json:"adcp_use"`
	KeyOps  []string `json:"key_ops"`
}
