// Command chartpackage packages the chart for a release, as `helm package --version
// --app-version` would, with Helm's own code: make release runs it, so no helm binary is needed.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
)

func main() {
	dir := flag.String("chart", "", "the chart's directory")
	version := flag.String("version", "", "the release, v0.2.0: the chart's version is 0.2.0, its appVersion v0.2.0")
	out := flag.String("out", ".", "where to write the package")
	flag.Parse()
	if err := run(*dir, *version, *out); err != nil {
		fmt.Fprintln(os.Stderr, "chartpackage:", err)
		os.Exit(1)
	}
}

func run(dir, version, out string) error {
	if dir == "" || !strings.HasPrefix(version, "v") {
		return fmt.Errorf("want -chart DIR and -version vX.Y.Z, got %q and %q", dir, version)
	}
	ch, err := loader.LoadDir(dir)
	if err != nil {
		return err
	}
	// The image tag the chart defaults to is its appVersion: one release, one version.
	ch.Metadata.Version = strings.TrimPrefix(version, "v")
	ch.Metadata.AppVersion = version
	if err := ch.Validate(); err != nil {
		return err
	}
	path, err := chartutil.Save(ch, out)
	if err != nil {
		return err
	}
	fmt.Println(path)
	return nil
}
