{{/* Names and labels shared by every template. */}}

{{- define "speechtune.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name; the release name alone when it already names the chart. */}}
{{- define "speechtune.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "speechtune.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "speechtune.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: speechtune
{{- end -}}

{{- define "speechtune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "speechtune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The operator pod's selector labels as key=value,key=value (the operator's setting
operator_pod_labels, which narrows the trainers' NetworkPolicy to this pod). */}}
{{- define "speechtune.selectorPairs" -}}
{{- $pairs := list -}}
{{- range $key, $value := include "speechtune.selectorLabels" . | fromYaml -}}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{- define "speechtune.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "speechtune.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Cluster-scoped objects carry the namespace too: two releases of the same name in two
namespaces must not fight over one ClusterRole. */}}
{{- define "speechtune.clusterName" -}}
{{- printf "%s-%s" (include "speechtune.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "speechtune.operatorImage" -}}
{{- $image := .Values.operator.image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* `release` label for kube-prometheus-stack's monitor selectors, plus the user's labels. */}}
{{- define "speechtune.monitorLabels" -}}
{{- with .root.Values.metrics.prometheusRelease }}
release: {{ . | quote }}
{{- end }}
{{- with .labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}
