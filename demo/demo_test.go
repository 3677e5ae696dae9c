package demo

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// sourceInputs mirror sdk/js/demo/scripts/sources.mjs: the files the
// built assets depend on, relative to sdk/js, directories walked whole.
var sourceInputs = []string{"demo/index.html", "demo/package.json", "demo/tsconfig.json", "demo/vite.config.ts", "demo/src", "client/src"}

// manifest computes what scripts/stamp.mjs wrote into sources.sha256.
func manifest(t *testing.T, sdk string) map[string]string {
	t.Helper()
	files := map[string]string{}
	for _, in := range sourceInputs {
		err := filepath.WalkDir(filepath.Join(sdk, filepath.FromSlash(in)), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(sdk, p)
			sum := sha256.Sum256(b)
			files[filepath.ToSlash(rel)] = hex.EncodeToString(sum[:])
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return files
}

// TestAssetsAreFresh fails when sdk/js/demo's sources (or the client's
// they bundle) changed since the committed assets were built: run make demo.
func TestAssetsAreFresh(t *testing.T) {
	want := manifest(t, filepath.Join("..", "sdk", "js"))
	b, err := os.ReadFile("sources.sha256")
	if err != nil {
		t.Fatalf("%v: build the demo with make demo", err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("sources.sha256: bad line %q", line)
		}
		got[name] = sum
	}
	var stale []string
	for name, sum := range want {
		switch g, ok := got[name]; {
		case !ok:
			stale = append(stale, name+" (new)")
		case g != sum:
			stale = append(stale, name+" (changed)")
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			stale = append(stale, name+" (removed)")
		}
	}
	sort.Strings(stale)
	if len(stale) > 0 {
		t.Fatalf("demo/dist is stale against its sources; run make demo and commit demo/: %s", strings.Join(stale, ", "))
	}
	// The manifest names the assets' build, and the build is here.
	if _, err := dist.ReadFile("dist/index.html"); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, h http.Handler, method, target string) *http.Response {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec.Result()
}

func body(t *testing.T, r *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHandler(t *testing.T) {
	h := Handler(Config{Mode: "embedded", Tables: []string{"orders"}})
	index := body(t, get(t, h, "GET", "/"))
	if !strings.Contains(index, `<div id="root">`) {
		t.Fatalf("GET / is not the app's index.html: %.200s", index)
	}
	// The app's routes get index.html, as do unknown extensionless paths.
	for _, p := range []string{"/chat/general", "/cursors/lobby", "/answers/demo", "/orders", "/assets"} {
		r := get(t, h, "GET", p)
		if r.StatusCode != 200 || r.Header.Get("Content-Type") != "text/html; charset=utf-8" || body(t, r) != index {
			t.Errorf("GET %s: %d %s, want index.html", p, r.StatusCode, r.Header.Get("Content-Type"))
		}
	}
	// Every built file is served with its content type; hashed ones are cached.
	assets, err := dist.ReadDir("dist/assets")
	if err != nil || len(assets) == 0 {
		t.Fatalf("no built assets: %v", err)
	}
	types := map[string]string{".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
	for _, a := range assets {
		r := get(t, h, "GET", "/assets/"+a.Name())
		want, known := types[path.Ext(a.Name())]
		if r.StatusCode != 200 || (known && r.Header.Get("Content-Type") != want) {
			t.Errorf("GET /assets/%s: %d %q", a.Name(), r.StatusCode, r.Header.Get("Content-Type"))
		}
		if !strings.Contains(r.Header.Get("Cache-Control"), "immutable") {
			t.Errorf("GET /assets/%s: Cache-Control %q", a.Name(), r.Header.Get("Cache-Control"))
		}
		if r.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET /assets/%s: no nosniff", a.Name())
		}
		// Revalidation by ETag.
		req := httptest.NewRequest("GET", "/assets/"+a.Name(), nil)
		req.Header.Set("If-None-Match", r.Header.Get("ETag"))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusNotModified {
			t.Errorf("GET /assets/%s with its ETag: %d, want 304", a.Name(), rec.Code)
		}
	}
	if r := get(t, h, "HEAD", "/"); r.StatusCode != 200 || body(t, r) != "" {
		t.Errorf("HEAD /: %d", r.StatusCode)
	}
	if r := get(t, h, "GET", "/config.json"); r.StatusCode != 200 || body(t, r) != `{"mode":"embedded","tables":["orders"]}` {
		t.Errorf("GET /config.json: %d", r.StatusCode)
	}
	if r := get(t, h, "GET", "/"); r.Header.Get("Cache-Control") != "no-cache" {
		t.Errorf("GET /: Cache-Control %q, want no-cache", r.Header.Get("Cache-Control"))
	}
	// Not found: missing files, anything under /api/, sources and the manifest.
	for _, p := range []string{"/missing.js", "/assets/missing.css", "/api/v1/nothing", "/api", "/src/main.tsx", "/sources.sha256", "/../demo.go"} {
		if r := get(t, h, "GET", p); r.StatusCode != 404 {
			t.Errorf("GET %s: %d, want 404", p, r.StatusCode)
		}
	}
	for _, m := range []string{"POST", "PUT", "DELETE"} {
		r := get(t, h, m, "/")
		if r.StatusCode != 405 || r.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s /: %d, want 405 with Allow", m, r.StatusCode)
		}
	}
	if r := get(t, Handler(Config{Mode: "cluster"}), "GET", "/config.json"); body(t, r) != `{"mode":"cluster","tables":[]}` {
		t.Error(fmt.Sprint("config without tables: ", r.StatusCode))
	}
}
