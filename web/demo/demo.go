// Package webdemo is the ePortfolio demo page that `tocsin dev` serves at /: index.html
// and the bundle of src/main.ts (dist/app.js), embedded in the binary so that building it
// needs no Node. `go generate ./web/demo` rebuilds the bundle with the pinned esbuild (a Go
// tool); TestBundleIsCurrent fails while the committed one is stale.
package webdemo

import (
	"embed"
	"encoding/json"
	"net/http"
	"slices"
)

//go:generate go tool esbuild src/main.ts --bundle --format=esm --minify --target=es2022 --log-level=warning --outfile=dist/app.js

//go:embed index.html dist/app.js
var files embed.FS

// TokenFunc mints a bearer token for a demo user.
type TokenFunc func(user string) (string, error)

// Handler serves the page at GET /, its bundle at GET /dev/app.js, and a token for one of
// users at GET /dev/token?user=NAME ({"token": "…"}). Handing a token to whoever asks is
// what a development server may do and a deployment never: only `tocsin dev` mounts it.
func Handler(users []string, token TokenFunc) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		serveFile(w, "index.html", "text/html; charset=utf-8")
	})
	mux.HandleFunc("GET /dev/app.js", func(w http.ResponseWriter, _ *http.Request) {
		serveFile(w, "dist/app.js", "text/javascript; charset=utf-8")
	})
	mux.HandleFunc("GET /dev/token", func(w http.ResponseWriter, r *http.Request) {
		user := r.URL.Query().Get("user")
		if !slices.Contains(users, user) {
			http.Error(w, "unknown demo user", http.StatusNotFound)
			return
		}
		tok, err := token(user)
		if err != nil {
			http.Error(w, "cannot mint a token", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(map[string]string{"token": tok})
	})
	return mux
}

func serveFile(w http.ResponseWriter, name, contentType string) {
	b, err := files.ReadFile(name)
	if err != nil {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(b)
}
