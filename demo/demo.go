// Package demo serves Updraft's demo app: the single-page app built from
// sdk/js/demo (a live orders dashboard, a chat room, a cursor board and an
// AI answer viewer), embedded in the binary so that `make run` needs no
// Node. `updraft serve` mounts it at / with UPDRAFT_DEMO=true, behind the
// gateway's own endpoints.
//
// The assets in dist/ are built and committed by `make demo`, which also
// writes sources.sha256, the digest of every source file they were built
// from; TestAssetsAreFresh fails when the sources changed since.
package demo

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed all:dist
var dist embed.FS

// Config is what the app is told about the server, at /config.json.
type Config struct {
	// Mode is "embedded" (one node that tracks tables itself) or
	// "cluster" (Redis; `updraft tracker` tracks tables beside it).
	Mode string `json:"mode"`
	// Tables are the tracked tables this node knows of: UPDRAFT_TRACK_TABLES
	// when it has a database (embedded) or the variable is set (cluster).
	Tables []string `json:"tables"`
}

type asset struct {
	body []byte
	etag string
	ctyp string
}

// Handler serves the app: GET and HEAD of the built files, index.html for
// any other extensionless path (the app's own routes, such as /chat/general),
// 404 for missing files and for anything under /api/, and no directory
// listings. Hashed files under /assets/ are cached for a year, the rest is
// revalidated on every load.
func Handler(cfg Config) http.Handler {
	if cfg.Tables == nil {
		cfg.Tables = []string{}
	}
	conf, _ := json.Marshal(cfg)
	files := map[string]asset{"config.json": newAsset("config.json", conf)}
	root, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // the embed pattern guarantees dist exists
	}
	_ = fs.WalkDir(root, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(root, name)
		if err != nil {
			return err
		}
		files[name] = newAsset(name, body)
		return nil
	})
	return &handler{files: files}
}

func newAsset(name string, body []byte) asset {
	sum := sha256.Sum256(body)
	ctyp := mime.TypeByExtension(path.Ext(name))
	if ctyp == "" {
		ctyp = "application/octet-stream"
	}
	return asset{body: body, etag: `"` + hex.EncodeToString(sum[:12]) + `"`, ctyp: ctyp}
}

type handler struct {
	files map[string]asset
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	if name == "api" || strings.HasPrefix(name, "api/") {
		http.NotFound(w, r)
		return
	}
	a, ok := h.files[name]
	switch {
	case ok:
	case path.Ext(name) == "" || name == "index.html":
		a, ok = h.files["index.html"]
		name = "index.html"
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", a.ctyp)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("ETag", a.etag)
	if strings.HasPrefix(name, "assets/") {
		hd.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		hd.Set("Cache-Control", "no-cache")
	}
	if name == "index.html" {
		hd.Set("Referrer-Policy", "same-origin")
	}
	http.ServeContent(w, r, name, time.Time{}, strings.NewReader(string(a.body)))
}
