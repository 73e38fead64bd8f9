package slurm

import (
	_ "embed"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"text/template"
)

// SecretEnv is the environment variable that carries the per-job secret.
// The built-in sbatch script generates it at run time (32 random bytes as
// 64 hex digits) and exports it to every task; it is never printed.
const SecretEnv = "HPCRUN_JOB_SECRET"

//go:embed templates/sbatch.tmpl
var builtinTemplate string

// BuiltinTemplate returns the text/template source of the built-in sbatch
// script, a starting point for a user template.
func BuiltinTemplate() string { return builtinTemplate }

// ScriptOptions describes one sbatch script. Zero values mean the default
// that each field names.
type ScriptOptions struct {
	JobName       string // --job-name; default "hpcrun"
	Nodes         int    // --nodes; default 1
	NTasksPerNode int    // --ntasks-per-node; default 1
	GPUsPerNode   int    // --gpus-per-node; 0 = none requested
	CPUsPerTask   int    // --cpus-per-task (also given to srun); 0 = not set
	Time          string // --time, HH:MM:SS or D-HH:MM:SS; "" = partition default
	Partition     string // --partition; "" = cluster default
	Account       string // --account
	QOS           string // --qos
	Constraint    string // --constraint (node features, e.g. "a100&ib")

	// WorkDir becomes --chdir, and the default output files go under it.
	// "" leaves the job in the directory sbatch runs in.
	WorkDir string
	// Output and Error are --output and --error; they may hold Slurm's
	// patterns (%j job id, %x job name, %% a percent sign), and a relative
	// path is relative to WorkDir. Defaults: <WorkDir>/slurm-%j.out and
	// <WorkDir>/slurm-%j.err (a % in WorkDir is escaped), or plain
	// slurm-%j.out / .err when WorkDir is relative or empty.
	Output, Error string

	// Extra holds more #SBATCH lines, written as given after the others:
	// "--mem=0" or "#SBATCH --mem=0". The caller quotes their values.
	Extra []string

	Binary string   // the hpcrun binary; an absolute path is safest
	Config string   // the experiment config
	Set    []string // KEY=VALUE overrides, each passed as --set KEY=VALUE

	// Command, when not empty, replaces `Binary run Config --set ...` as
	// the program srun starts (argv; each word is shell-quoted). Tests use
	// it to run a shell snippet instead of hpcrun.
	Command []string
	// SrunArgs are more srun options, each shell-quoted, placed before the
	// command.
	SrunArgs []string
}

// ScriptData is what a script template sees. Every string in it is already
// quoted for where it goes.
type ScriptData struct {
	// Opts are the options with defaults filled in (unquoted; quote with
	// the template functions shq and sbatchq when you use them).
	Opts ScriptOptions
	// Directives are the #SBATCH arguments, one per line, without the
	// "#SBATCH " prefix, e.g. `--job-name=hpcrun`.
	Directives []string
	// Srun is the srun invocation without the program:
	// `srun --kill-on-bad-exit=1 --export=ALL [--cpus-per-task=N] ...`.
	Srun string
	// Command is the shell-quoted program and its arguments:
	// `/opt/hpcrun run /exp/config.toml --set kmeans.k=64`.
	Command string
	// SecretEnv is the name of the job-secret variable (SecretEnv).
	SecretEnv string
}

// ScriptError is an invalid ScriptOptions field.
type ScriptError struct {
	Field string // e.g. "Time"
	Msg   string
}

func (e *ScriptError) Error() string { return "slurm: sbatch option " + e.Field + ": " + e.Msg }

// templateFuncs are available to every script template.
var templateFuncs = template.FuncMap{
	"shq":     ShellQuote,
	"sbatchq": sbatchQuote,
}

// Render returns the built-in sbatch script for opts.
func Render(opts ScriptOptions) (string, error) {
	return RenderTemplate(builtinTemplate, opts)
}

// RenderTemplate renders a user's text/template source (for example the
// file named by the config's slurm.template) with the ScriptData of opts.
// Templates may use the functions shq (quote for bash) and sbatchq (quote
// a value for an #SBATCH line). A template that does not use
// .Directives, .Srun or .Command must quote what it writes itself.
func RenderTemplate(tmpl string, opts ScriptOptions) (string, error) {
	t, err := template.New("sbatch").Option("missingkey=error").Funcs(templateFuncs).Parse(tmpl)
	if err != nil {
		return "", fmt.Errorf("slurm: parsing sbatch template: %w", err)
	}
	data, err := NewScriptData(opts)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		return "", fmt.Errorf("slurm: rendering sbatch template: %w", err)
	}
	return b.String(), nil
}

// timeRE accepts HH:MM:SS (any number of hours) and D-HH:MM:SS.
var timeRE = regexp.MustCompile(`^(?:([0-9]{1,4})-([0-9]{1,2})|([0-9]{1,6})):([0-9]{2}):([0-9]{2})$`)

// ValidateTime checks a --time value: HH:MM:SS (hours may exceed 24) or
// D-HH:MM:SS (hours below 24), minutes and seconds below 60.
func ValidateTime(s string) error {
	m := timeRE.FindStringSubmatch(s)
	if m == nil {
		return fmt.Errorf("%q is not HH:MM:SS or D-HH:MM:SS", s)
	}
	if m[1] != "" {
		if h, _ := strconv.Atoi(m[2]); h >= 24 {
			return fmt.Errorf("%q: hours must be below 24 after a day count", s)
		}
	}
	mm, _ := strconv.Atoi(m[4])
	ss, _ := strconv.Atoi(m[5])
	if mm >= 60 || ss >= 60 {
		return fmt.Errorf("%q: minutes and seconds must be below 60", s)
	}
	return nil
}

// NewScriptData validates opts, fills in the defaults and quotes every
// value for the place it goes.
func NewScriptData(opts ScriptOptions) (*ScriptData, error) {
	o := opts
	o.Extra = append([]string(nil), opts.Extra...)
	if o.JobName == "" {
		o.JobName = "hpcrun"
	}
	for _, c := range []struct {
		name string
		v    *int
	}{{"Nodes", &o.Nodes}, {"NTasksPerNode", &o.NTasksPerNode}, {"GPUsPerNode", &o.GPUsPerNode}, {"CPUsPerTask", &o.CPUsPerTask}} {
		if *c.v < 0 {
			return nil, &ScriptError{c.name, fmt.Sprintf("%d is negative", *c.v)}
		}
		if *c.v > 1<<20 {
			return nil, &ScriptError{c.name, fmt.Sprintf("%d is implausibly large", *c.v)}
		}
	}
	o.Nodes = max(o.Nodes, 1)
	o.NTasksPerNode = max(o.NTasksPerNode, 1)
	if o.Time != "" {
		if err := ValidateTime(o.Time); err != nil {
			return nil, &ScriptError{"Time", err.Error()}
		}
	}
	if o.Output == "" {
		o.Output = outputUnder(o.WorkDir, "slurm-%j.out")
	}
	if o.Error == "" {
		o.Error = outputUnder(o.WorkDir, "slurm-%j.err")
	}

	d := &ScriptData{SecretEnv: SecretEnv}
	dir := func(field, opt, v string) error {
		if v == "" {
			return nil
		}
		if err := checkDirective(v); err != nil {
			return &ScriptError{field, err.Error()}
		}
		d.Directives = append(d.Directives, opt+"="+sbatchQuote(v))
		return nil
	}
	num := func(opt string, v int) {
		if v > 0 {
			d.Directives = append(d.Directives, opt+"="+strconv.Itoa(v))
		}
	}
	if err := dir("JobName", "--job-name", o.JobName); err != nil {
		return nil, err
	}
	num("--nodes", o.Nodes)
	num("--ntasks-per-node", o.NTasksPerNode)
	num("--gpus-per-node", o.GPUsPerNode)
	num("--cpus-per-task", o.CPUsPerTask)
	for _, f := range []struct{ field, opt, v string }{
		{"Time", "--time", o.Time},
		{"Partition", "--partition", o.Partition},
		{"Account", "--account", o.Account},
		{"QOS", "--qos", o.QOS},
		{"Constraint", "--constraint", o.Constraint},
		{"WorkDir", "--chdir", o.WorkDir},
		{"Output", "--output", o.Output},
		{"Error", "--error", o.Error},
	} {
		if err := dir(f.field, f.opt, f.v); err != nil {
			return nil, err
		}
	}
	for _, f := range []struct{ field, v string }{{"Output", o.Output}, {"Error", o.Error}} {
		if strings.Contains(f.v, `\`) {
			// Slurm drops backslashes from output file names and then
			// stops expanding %j: the file would land somewhere else.
			return nil, &ScriptError{f.field, fmt.Sprintf("%q: Slurm cannot write output files whose names hold a backslash", f.v)}
		}
	}
	for i, x := range o.Extra {
		x = strings.TrimSpace(x)
		if rest, ok := strings.CutPrefix(x, "#SBATCH"); ok {
			x = strings.TrimSpace(rest)
		}
		field := fmt.Sprintf("Extra[%d]", i)
		if err := checkDirective(x); err != nil {
			return nil, &ScriptError{field, err.Error()}
		}
		if !strings.HasPrefix(x, "-") {
			return nil, &ScriptError{field, fmt.Sprintf("%q is not an sbatch option (want e.g. \"--mem=0\")", x)}
		}
		o.Extra[i] = x
		d.Directives = append(d.Directives, x)
	}

	srun := []string{"srun", "--kill-on-bad-exit=1", "--export=ALL"}
	if o.CPUsPerTask > 0 {
		// Since Slurm 22.05, srun no longer takes --cpus-per-task from
		// the batch job; pass it on explicitly.
		srun = append(srun, "--cpus-per-task="+strconv.Itoa(o.CPUsPerTask))
	}
	for i, a := range o.SrunArgs {
		if err := checkWord(a); err != nil {
			return nil, &ScriptError{fmt.Sprintf("SrunArgs[%d]", i), err.Error()}
		}
		srun = append(srun, ShellQuote(a))
	}
	d.Srun = strings.Join(srun, " ")

	argv := o.Command
	if len(argv) == 0 {
		if o.Binary == "" {
			return nil, &ScriptError{"Binary", "the hpcrun binary path is empty"}
		}
		if o.Config == "" {
			return nil, &ScriptError{"Config", "the config path is empty"}
		}
		argv = []string{o.Binary, "run", o.Config}
		for i, s := range o.Set {
			if !strings.Contains(s, "=") || strings.HasPrefix(s, "=") {
				return nil, &ScriptError{fmt.Sprintf("Set[%d]", i), fmt.Sprintf("%q is not KEY=VALUE", s)}
			}
			argv = append(argv, "--set", s)
		}
	}
	words := make([]string, len(argv))
	for i, a := range argv {
		if err := checkWord(a); err != nil {
			return nil, &ScriptError{"Command", err.Error()}
		}
		words[i] = ShellQuote(a)
	}
	d.Command = strings.Join(words, " ")
	d.Opts = o
	return d, nil
}

// outputUnder joins dir and a Slurm file-name pattern, escaping % in dir.
// Slurm reads a relative output path against the job's working directory
// (--chdir), so a relative dir is left out.
func outputUnder(dir, pattern string) string {
	if !strings.HasPrefix(dir, "/") {
		return pattern
	}
	return strings.TrimRight(strings.ReplaceAll(dir, "%", "%%"), "/") + "/" + pattern
}

// checkDirective rejects what cannot sit on one #SBATCH line.
func checkDirective(v string) error {
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%q holds a control character (newline, tab, ...) that cannot go on an #SBATCH line", v)
		}
	}
	return nil
}

// checkWord rejects what cannot be a command-line argument.
func checkWord(v string) error {
	if strings.IndexByte(v, 0) >= 0 {
		return fmt.Errorf("%q holds a NUL byte", v)
	}
	return nil
}

// assignmentRE matches words that bash would read as a variable
// assignment if they came first in a command.
var assignmentRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*\+?=`)

// shellSafe reports whether s needs no quoting in bash.
func shellSafe(s string) bool {
	if s == "" || assignmentRE.MatchString(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("_-+./:,=@%", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// ShellQuote quotes s as one bash word: unchanged when it holds only
// letters, digits and _-+./:,=@% (and does not look like NAME=value), else
// in single quotes, an embedded single quote closing, escaping and
// reopening them:
//
//	ShellQuote("it's") == `'it'\''s'`
func ShellQuote(s string) string {
	if shellSafe(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// sbatchQuote quotes a value for an #SBATCH line the way sbatch reads it:
// sbatch ends an unquoted value at white space, treats # as the start of a
// comment and strips quotes and backslashes. Values without those
// characters stay as they are; others go in double quotes with \ and "
// escaped by a backslash.
func sbatchQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\"'\\#") {
		return s
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
