package updraft_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The repository's docs must stand on their own: the contract is stated in
// them, not in design notes kept elsewhere, and every relative link they
// hold points at a file of the repository.
func TestDocsStandOnTheirOwn(t *testing.T) {
	docs, err := filepath.Glob("docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	docs = append(docs, "README.md", "deploy/README.md")
	outside := regexp.MustCompile(`shared/design|\.\./shared|\.\./\.library`)
	link := regexp.MustCompile(`\]\(([^)#\s]+)(#[^)]*)?\)`)
	for _, doc := range docs {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			if outside.MatchString(line) {
				t.Errorf("%s:%d points outside the repository: %s", doc, i+1, line)
			}
			for _, m := range link.FindAllStringSubmatch(line, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				path := filepath.Join(filepath.Dir(doc), target)
				if _, err := os.Stat(path); err != nil {
					t.Errorf("%s:%d links to %s, which is not in the repository", doc, i+1, target)
				}
			}
		}
	}
}
