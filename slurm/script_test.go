package slurm

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite slurm/testdata/*.golden from the current output")

// renderCases are rendered to testdata/<name>.golden.
var renderCases = []struct {
	name string
	tmpl string // "" = the built-in template
	opts ScriptOptions
}{
	{
		name: "minimal",
		opts: ScriptOptions{Binary: "/opt/hpcrun/bin/hpcrun", Config: "/exp/quickstart.toml"},
	},
	{
		name: "full",
		opts: ScriptOptions{
			JobName: "laion dedup", Nodes: 4, NTasksPerNode: 8, GPUsPerNode: 8, CPUsPerTask: 12,
			Time: "1-12:00:00", Partition: "gpu", Account: "proj-123", QOS: "high",
			Constraint: "a100&ib", WorkDir: "/scratch/runs/laion dedup",
			Extra:  []string{"--mem=0", "#SBATCH --exclusive", "  --mail-type=END  "},
			Binary: "/opt/hpcrun/bin/hpcrun", Config: "/exp/laion.toml",
			Set:      []string{"kmeans.k=50000", "job.name=with space", `dedup.order="hard"`},
			SrunArgs: []string{"--cpu-bind=cores"},
		},
	},
	{
		name: "quoting",
		opts: ScriptOptions{
			JobName: `it's "#1"`, WorkDir: `/tmp/a b/it's/100%/"q"`, Time: "00:30:00",
			Binary: "/opt/my apps/hpcrun", Config: "/exp/$HOME/`id`/it's\nnewline.toml",
			Set: []string{"job.name=a'b", "x=$(reboot)"},
		},
	},
	{
		name: "command",
		opts: ScriptOptions{
			NTasksPerNode: 4, Output: "/logs/%x-%j.txt", Error: "/logs/%x-%j.txt",
			Command: []string{"bash", "-c", `echo "$SLURM_PROCID" > "rank.$SLURM_PROCID"`},
		},
	},
	{
		name: "user_template",
		tmpl: `#!/bin/bash
{{range .Directives}}#SBATCH {{.}}
{{end}}#SBATCH --comment={{sbatchq "made by a user template"}}
set -euo pipefail
export {{.SecretEnv}}=$(openssl rand -hex 32)
module load cuda/12.4
cd {{shq .Opts.WorkDir}}
{{.Srun}} --mpi=none {{.Command}}
`,
		opts: ScriptOptions{Nodes: 2, WorkDir: "/scratch/x y", Binary: "hpcrun", Config: "c.toml"},
	},
}

func renderCase(tmpl string, opts ScriptOptions) (string, error) {
	if tmpl == "" {
		return Render(opts)
	}
	return RenderTemplate(tmpl, opts)
}

func TestRenderGolden(t *testing.T) {
	for _, tc := range renderCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := renderCase(tc.tmpl, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./slurm -run TestRenderGolden -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("rendered script differs from %s (run with -update after checking the change):\n%s", path, got)
			}
		})
	}
}

func TestRenderBashSyntax(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not on PATH")
	}
	for _, tc := range renderCases {
		got, err := renderCase(tc.tmpl, tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bash, "-n")
		cmd.Stdin = strings.NewReader(got)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: bash -n: %v\n%s", tc.name, err, out)
		}
	}
}

// TestRenderedScriptRuns runs the built-in script with bash and a fake
// srun that records what it was given: the arguments must arrive intact,
// the secret must be fresh, exported, 64 hex digits and never printed, and
// the umask 077.
func TestRenderedScriptRuns(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not on PATH")
	}
	for _, tool := range []string{"head", "od", "tr", "date"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not on PATH", tool)
		}
	}
	opts := renderCases[2].opts // quoting
	opts.CPUsPerTask = 3
	opts.SrunArgs = []string{"--label", "--x=it's"}
	script, err := Render(opts)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	fake := `#!/bin/bash
printf '%s\0' "$@" > "$FAKE_OUT/args"
printf '%s' "$HPCRUN_JOB_SECRET" > "$FAKE_OUT/secret"
umask > "$FAKE_OUT/umask"
echo "fake srun ran"
`
	if err := os.WriteFile(filepath.Join(bin, "srun"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "job.sh")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	secrets := map[string]bool{}
	for i := range 2 {
		var out bytes.Buffer
		cmd := exec.Command(bash, path)
		cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "FAKE_OUT="+dir, "SLURM_JOB_ID=99", "HPCRUN_JOB_SECRET=stale")
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("run %d: %v\n%s", i, err, out.String())
		}
		args, err := os.ReadFile(filepath.Join(dir, "args"))
		if err != nil {
			t.Fatal(err)
		}
		gotArgs := strings.Split(strings.TrimSuffix(string(args), "\x00"), "\x00")
		wantArgs := []string{"--kill-on-bad-exit=1", "--export=ALL", "--cpus-per-task=3", "--label", "--x=it's",
			opts.Binary, "run", opts.Config, "--set", opts.Set[0], "--set", opts.Set[1]}
		if !reflect.DeepEqual(gotArgs, wantArgs) {
			t.Errorf("srun got %q\nwant %q", gotArgs, wantArgs)
		}
		secret, _ := os.ReadFile(filepath.Join(dir, "secret"))
		if !regexp.MustCompile(`^[0-9a-f]{64}$`).Match(secret) {
			t.Errorf("secret %q is not 64 hex digits", secret)
		}
		if bytes.Contains(out.Bytes(), secret) {
			t.Errorf("the script printed the secret:\n%s", out.String())
		}
		if !strings.Contains(out.String(), "hpcrun: job 99 ") || !strings.Contains(out.String(), "fake srun ran") {
			t.Errorf("unexpected output:\n%s", out.String())
		}
		if u, _ := os.ReadFile(filepath.Join(dir, "umask")); strings.TrimSpace(string(u)) != "0077" {
			t.Errorf("umask %q, want 0077", u)
		}
		secrets[string(secret)] = true
	}
	if len(secrets) != 2 {
		t.Errorf("two runs made the same secret")
	}
}

func TestRenderDefaults(t *testing.T) {
	d, err := NewScriptData(ScriptOptions{Binary: "hpcrun", Config: "c.toml", WorkDir: "/runs/50%/"})
	if err != nil {
		t.Fatal(err)
	}
	o := d.Opts
	if o.JobName != "hpcrun" || o.Nodes != 1 || o.NTasksPerNode != 1 ||
		o.Output != "/runs/50%%/slurm-%j.out" || o.Error != "/runs/50%%/slurm-%j.err" {
		t.Errorf("defaults: %+v", o)
	}
	for _, wd := range []string{"", "runs/x"} {
		d, err = NewScriptData(ScriptOptions{Binary: "hpcrun", Config: "c.toml", WorkDir: wd})
		if err != nil || d.Opts.Output != "slurm-%j.out" || d.Opts.Error != "slurm-%j.err" {
			t.Errorf("defaults with WorkDir %q: %+v, %v", wd, d, err)
		}
	}
	if d.Command != "hpcrun run c.toml" {
		t.Errorf("Command %q", d.Command)
	}
}

func TestRenderErrors(t *testing.T) {
	ok := ScriptOptions{Binary: "/bin/hpcrun", Config: "/c.toml"}
	for _, tc := range []struct {
		field string
		edit  func(o *ScriptOptions)
	}{
		{"Time", func(o *ScriptOptions) { o.Time = "1:00" }},
		{"Time", func(o *ScriptOptions) { o.Time = "10:60:00" }},
		{"Time", func(o *ScriptOptions) { o.Time = "1-24:00:00" }},
		{"Time", func(o *ScriptOptions) { o.Time = "01:00:00\n#SBATCH --x" }},
		{"Time", func(o *ScriptOptions) { o.Time = "-1:00:00" }},
		{"Nodes", func(o *ScriptOptions) { o.Nodes = -1 }},
		{"NTasksPerNode", func(o *ScriptOptions) { o.NTasksPerNode = -2 }},
		{"GPUsPerNode", func(o *ScriptOptions) { o.GPUsPerNode = 1 << 30 }},
		{"CPUsPerTask", func(o *ScriptOptions) { o.CPUsPerTask = -1 }},
		{"JobName", func(o *ScriptOptions) { o.JobName = "a\nb" }},
		{"Partition", func(o *ScriptOptions) { o.Partition = "gpu\n#SBATCH --account=other" }},
		{"Account", func(o *ScriptOptions) { o.Account = "a\rb" }},
		{"QOS", func(o *ScriptOptions) { o.QOS = "q\tq" }},
		{"Constraint", func(o *ScriptOptions) { o.Constraint = "x\x00" }},
		{"WorkDir", func(o *ScriptOptions) { o.WorkDir = "/a\nb" }},
		{"Output", func(o *ScriptOptions) { o.Output = "/a\nb" }},
		{"Output", func(o *ScriptOptions) { o.WorkDir = `/runs/back\slash` }},
		{"Error", func(o *ScriptOptions) { o.Error = `C:\logs` }},
		{"Extra[1]", func(o *ScriptOptions) { o.Extra = []string{"--mem=0", "--x\n--y"} }},
		{"Extra[0]", func(o *ScriptOptions) { o.Extra = []string{"mem=0"} }},
		{"Extra[0]", func(o *ScriptOptions) { o.Extra = []string{"#SBATCH"} }},
		{"Binary", func(o *ScriptOptions) { o.Binary = "" }},
		{"Config", func(o *ScriptOptions) { o.Config = "" }},
		{"Set[0]", func(o *ScriptOptions) { o.Set = []string{"novalue"} }},
		{"Set[1]", func(o *ScriptOptions) { o.Set = []string{"a=1", "=1"} }},
		{"Command", func(o *ScriptOptions) { o.Config = "a\x00b" }},
		{"SrunArgs[0]", func(o *ScriptOptions) { o.SrunArgs = []string{"\x00"} }},
	} {
		o := ok
		tc.edit(&o)
		_, err := Render(o)
		var se *ScriptError
		if !errors.As(err, &se) || se.Field != tc.field {
			t.Errorf("%s: got %v, want a *ScriptError for %s", tc.field, err, tc.field)
		}
	}
	if _, err := Render(ok); err != nil {
		t.Fatalf("valid options: %v", err)
	}
	if _, err := RenderTemplate("{{.Nope}}", ok); err == nil {
		t.Errorf("template with an unknown field: no error")
	}
	if _, err := RenderTemplate("{{", ok); err == nil {
		t.Errorf("unparsable template: no error")
	}
}

func TestValidateTime(t *testing.T) {
	for _, s := range []string{"00:00:00", "01:30:00", "48:00:00", "100:00:00", "7-00:00:00", "1-23:59:59", "0-1:00:00"} {
		if err := ValidateTime(s); err != nil {
			t.Errorf("ValidateTime(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "1:00", "60", "1:00:60", "1:60:00", "1-24:00:00", "a-01:00:00", "01:00:00 ", "1-1", "UNLIMITED"} {
		if err := ValidateTime(s); err == nil {
			t.Errorf("ValidateTime(%q): no error", s)
		}
	}
}

func TestShellQuote(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not on PATH")
	}
	words := []string{"", "plain", "/a/b.toml", "kmeans.k=64", "--x=1", "A=1", "a b", "it's", `"`, `\`, "$HOME",
		"`id`", "$(id)", "*", "~", "a\nb", "!x", "é", "'", "''", "%j", "-", "x;y", "a|b", "#c"}
	var script strings.Builder
	script.WriteString("printf '%s\\0'")
	for _, w := range words {
		script.WriteString(" " + ShellQuote(w))
	}
	out, err := exec.Command(bash, "-c", script.String()).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if !reflect.DeepEqual(got, words) {
		t.Errorf("bash read back %q\nwant %q", got, words)
	}
	if ShellQuote("kmeans.k=64") != "kmeans.k=64" || ShellQuote("A=1") != "'A=1'" {
		t.Errorf("ShellQuote quotes too much or too little")
	}
}

// sbatchUnquote reads one #SBATCH argument the way sbatch does
// (_get_argument in src/sbatch/opt.c): white space ends an unquoted value,
// quotes of either kind group, a backslash escapes the next character, an
// unquoted # starts a comment.
func sbatchUnquote(s string) string {
	var b strings.Builder
	var q byte
	esc := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case esc:
			esc = false
		case c == '\\':
			esc = true
			continue
		case q != 0:
			if c == q {
				q = 0
				continue
			}
		case c == '"' || c == '\'':
			q = c
			continue
		case c == '#' || c == ' ' || c == '\t':
			return b.String()
		}
		b.WriteByte(c)
	}
	return b.String()
}

func TestSbatchQuote(t *testing.T) {
	for _, v := range []string{"gpu", "a100&ib", "/runs/x/slurm-%j.out", "a b", `it's`, `"q"`, `a\b`, "#1", "x # y", "tab\tx", ""} {
		q := sbatchQuote(v)
		if got := sbatchUnquote(q + " # trailing comment"); got != v {
			t.Errorf("sbatchQuote(%q) = %s reads back as %q", v, q, got)
		}
	}
}
