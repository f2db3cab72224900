//go:build !linux

package main

import "errors"

// startPostgres is implemented on Linux only; elsewhere set DATABASE_URL.
func startPostgres() (url string, stop func(), err error) {
	return "", nil, errors.New("this example starts its own PostgreSQL on Linux only: set DATABASE_URL to a database it may create tables in")
}
