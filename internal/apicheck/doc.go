// Package apicheck holds the tests of the module's public API as a whole:
// what a program outside the module can name and call.
package apicheck
