package main

import (
	"context"
	"errors"
	"io"
)

func runBench(context.Context, []string, io.Writer) error {
	return errors.New("usage: tocsin bench capture")
}
