{{/* The labels every object carries; the selector is the first two. */}}
{{- define "trustmount.selectorLabels" -}}
app.kubernetes.io/name: trustmount
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Helm's bookkeeping labels (the only ones deploy/kubernetes does not carry). */}}
{{- define "trustmount.labels" -}}
{{ include "trustmount.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
