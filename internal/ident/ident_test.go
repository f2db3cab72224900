package ident

import "testing"

func TestValid(t *testing.T) {
	for s, want := range map[string]bool{
		"whk_0123-4567.89:ab": true, "": false, "a b": false, "a/b": false, "ä": false, "abc": true,
	} {
		if got := Valid(s, 1, 20); got != want {
			t.Errorf("Valid(%q) = %v, want %v", s, got, want)
		}
	}
	if Valid("abcd", 5, 10) || Valid("abcdefghijk", 1, 10) {
		t.Error("the length bounds are not applied")
	}
}
