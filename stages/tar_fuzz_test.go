package stages

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// FuzzTarReader: any bytes as an input tar give samples or an error naming
// the tar, never a panic or a hang.
func FuzzTarReader(f *testing.F) {
	var good bytes.Buffer
	tw := tar.NewWriter(&good)
	for _, name := range []string{"000000001.jpg", "000000001.txt", "000000002.jpg"} {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: 3, Format: tar.FormatUSTAR})
		tw.Write([]byte("abc"))
	}
	tw.Close()
	f.Add(good.Bytes())
	f.Add(good.Bytes()[:700])
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0}, 1024))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "in.tar")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		members := 0
		err := forEachMember(p, func(h *tar.Header, r io.Reader) error {
			members++
			_, err := io.Copy(io.Discard, r)
			return err
		})
		if err != nil && !bytes.Contains([]byte(err.Error()), []byte(p)) {
			t.Fatalf("error does not name the tar: %v", err)
		}
		if _, kerr := tarKeys(p); kerr != nil && err == nil {
			// tarKeys may reject names that are not keys; both must not panic
			_ = kerr
		}
	})
}
