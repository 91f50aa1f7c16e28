package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// grantedRoles are the files of config/rbac whose rules the manager's ServiceAccount holds.
var grantedRoles = []string{"role.yaml", "leader_election_role.yaml"}

// auditEvent is the part of an audit.k8s.io/v1 Event that says who did what to which resource.
type auditEvent struct {
	Verb             string `json:"verb"`
	ImpersonatedUser *struct {
		Username string `json:"username"`
	} `json:"impersonatedUser"`
	ObjectRef *struct {
		APIGroup    string `json:"apiGroup"`
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
	} `json:"objectRef"`
}

// unusedPermissions returns every group/resource/verb the shipped RBAC grants the manager that
// no request of the manager's ServiceAccount in the audit log used. A permission nothing uses is
// a permission an attacker who takes the pod gets for free.
func unusedPermissions(root, auditLog string) ([]string, error) {
	used, err := usedPermissions(auditLog)
	if err != nil {
		return nil, err
	}
	var unused []string
	for _, file := range grantedRoles {
		data, err := os.ReadFile(filepath.Join(root, "config", "rbac", file))
		if err != nil {
			return nil, err
		}
		var rules []rbacv1.PolicyRule
		for _, doc := range strings.Split(string(data), "\n---") {
			var role struct {
				Rules []rbacv1.PolicyRule `json:"rules"`
			}
			if err := yaml.Unmarshal([]byte(doc), &role); err != nil {
				return nil, fmt.Errorf("%s: %w", file, err)
			}
			rules = append(rules, role.Rules...)
		}
		for _, rule := range rules {
			if len(rule.NonResourceURLs) > 0 {
				unused = append(unused, fmt.Sprintf("%s: non-resource URLs %v", file, rule.NonResourceURLs))
				continue
			}
			for _, group := range rule.APIGroups {
				for _, resource := range rule.Resources {
					for _, verb := range rule.Verbs {
						if key := permission(group, resource, verb); !used[key] {
							unused = append(unused, file+": "+key)
						}
					}
				}
			}
		}
	}
	sort.Strings(unused)
	return unused, nil
}

// usedPermissions reads the audit log and returns the permissions the manager's requests needed.
func usedPermissions(auditLog string) (map[string]bool, error) {
	f, err := os.Open(auditLog)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	used := map[string]bool{}
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for scanner.Scan() {
		var ev auditEvent
		if err := json.Unmarshal(scanner.Bytes(), &ev); err != nil {
			return nil, fmt.Errorf("%s: %w", auditLog, err)
		}
		if ev.ImpersonatedUser == nil || ev.ImpersonatedUser.Username != managerServiceAccount || ev.ObjectRef == nil {
			continue
		}
		resource := ev.ObjectRef.Resource
		if ev.ObjectRef.Subresource != "" {
			resource += "/" + ev.ObjectRef.Subresource
		}
		used[permission(ev.ObjectRef.APIGroup, resource, ev.Verb)] = true
	}
	return used, scanner.Err()
}

func permission(group, resource, verb string) string {
	if group == "" {
		group = "core"
	}
	return strings.Join([]string{group, resource, verb}, " ")
}
