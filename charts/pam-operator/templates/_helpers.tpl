{{/* The chart's name, shortened to the 63 characters a label value allows. */}}
{{- define "pam-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object's name. With the release named pam-operator the objects carry the
names kustomize gives them (config/default), so docs and RBAC bindings read the same either way.
*/}}
{{- define "pam-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "pam-operator.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "pam-operator.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "pam-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* What selects the manager's Pods; never changes across upgrades (a Deployment's selector is immutable). */}}
{{- define "pam-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pam-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: manager
{{- end }}

{{- define "pam-operator.labels" -}}
app.kubernetes.io/name: {{ include "pam-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pam-operator
helm.sh/chart: {{ include "pam-operator.chart" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "pam-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-controller-manager" (include "pam-operator.fullname" .)) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pam-operator.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
The rules of a generated RBAC object: files/rbac/role.yaml is config/rbac/role.yaml, written by
controller-gen from the +kubebuilder:rbac markers, copied by `make manifests`.
Called with (list $ "ClusterRole").
*/}}
{{- define "pam-operator.generatedRules" -}}
{{- $root := index . 0 }}
{{- $kind := index . 1 }}
{{- range regexSplit "(?m)^---\\s*$" ($root.Files.Get "files/rbac/role.yaml") -1 }}
{{- $obj := fromYaml . }}
{{- if and $obj (eq (get $obj "kind") $kind) }}
{{- toYaml $obj.rules }}
{{- end }}
{{- end }}
{{- end }}
