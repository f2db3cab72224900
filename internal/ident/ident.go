// Package ident checks AdCP's identifier alphabet, ^[A-Za-z0-9_.:-]{min,max}$
// (idempotency keys, notification and subscriber IDs, challenge values),
// for the seller's and the buyer's packages alike.
package ident

// Valid reports whether s is min to max bytes of [A-Za-z0-9_.:-].
func Valid(s string, min, max int) bool {
	if len(s) < min || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}
