// Command promrules prints the spec of a PrometheusRule (config/prometheus/rules.yaml) as a plain
// Prometheus rule file, so that promtool tests the very rules the operator ships: there is no
// second copy to drift from it.
//
//	go run ./hack/promrules config/prometheus/rules.yaml > rules.yaml
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: promrules PROMETHEUSRULE.yaml")
		os.Exit(2)
	}
	out, err := ruleFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "promrules:", err)
		os.Exit(1)
	}
	os.Stdout.Write(out)
}

// prometheusRule is the part of a monitoring.coreos.com/v1 PrometheusRule promtool needs. The
// spec is passed on as it is: promtool's own parser checks every field of it.
type prometheusRule struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Spec       json.RawMessage `json:"spec"`
}

// ruleFile reads the PrometheusRule at path and returns its spec as YAML.
func ruleFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var pr prometheusRule
	if err := yaml.Unmarshal(data, &pr); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if pr.APIVersion != "monitoring.coreos.com/v1" || pr.Kind != "PrometheusRule" {
		return nil, fmt.Errorf("%s: a %s %s, not a monitoring.coreos.com/v1 PrometheusRule", path, pr.APIVersion, pr.Kind)
	}
	if len(pr.Spec) == 0 {
		return nil, fmt.Errorf("%s: no spec", path)
	}
	return yaml.JSONToYAML(pr.Spec)
}
