package main

// comparators are what a Go team would otherwise run: River, and the seed
// design the library replaces.
func comparators() []system { return []system{&riverSystem{}, &seedSystem{}} }
