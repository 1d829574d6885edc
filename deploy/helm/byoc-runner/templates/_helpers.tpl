{{/* Names, labels and the checks every template relies on. */}}

{{- define "byoc-runner.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "byoc-runner.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "byoc-runner.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "byoc-runner.selectorLabels" -}}
app.kubernetes.io/name: {{ include "byoc-runner.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "byoc-runner.labels" -}}
helm.sh/chart: {{ include "byoc-runner.chart" . }}
{{ include "byoc-runner.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: runner
{{- end }}

{{/* One name used by the ServiceAccount, the pod and every RoleBinding subject. */}}
{{- define "byoc-runner.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "byoc-runner.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret that holds the runner token, and its key. */}}
{{- define "byoc-runner.tokenSecretName" -}}
{{- if .Values.token.existingSecret }}
{{- .Values.token.existingSecret }}
{{- else }}
{{- printf "%s-token" (include "byoc-runner.fullname" .) }}
{{- end }}
{{- end }}

{{- define "byoc-runner.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Whole seconds; at least drainGrace, so the kubelet never kills a job the runner drains. */}}
{{- define "byoc-runner.terminationGracePeriodSeconds" -}}
{{- $drain := int .Values.runner.drainGrace }}
{{- if ne (toString .Values.terminationGracePeriodSeconds) "" }}
{{- $tgps := int .Values.terminationGracePeriodSeconds }}
{{- if lt $tgps $drain }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least runner.drainGrace (%d): SIGKILL would cut the drain short" $tgps $drain) }}
{{- end }}
{{- $tgps }}
{{- else }}
{{- add $drain (int .Values.terminationGraceMargin) }}
{{- end }}
{{- end }}

{{/* Namespaces that get a Role: rbac.namespaces, or the release namespace. */}}
{{- define "byoc-runner.rbacNamespaces" -}}
{{- if .Values.rbac.namespaces }}
{{- toJson (uniq .Values.rbac.namespaces) }}
{{- else }}
{{- toJson (list .Release.Namespace) }}
{{- end }}
{{- end }}

{{/* Fails the render with one clear line when a required value is missing or contradictory. */}}
{{- define "byoc-runner.validate" -}}
{{- if not .Values.runner.id }}
{{- fail "runner.id is required (the runner's id in the control plane, RUNNER_ID)" }}
{{- end }}
{{- if not .Values.runner.apiUrl }}
{{- fail "runner.apiUrl is required (the runner API base URL, RUNNER_API_URL)" }}
{{- end }}
{{- if not (regexMatch "^https?://" .Values.runner.apiUrl) }}
{{- fail "runner.apiUrl must be an http(s) URL" }}
{{- end }}
{{- if regexMatch "^https?://[^/]*@" .Values.runner.apiUrl }}
{{- fail "runner.apiUrl must not carry credentials: put the token in token.existingSecret" }}
{{- end }}
{{- if and (not .Values.token.existingSecret) (not .Values.token.value) }}
{{- fail "a runner token is required: set token.existingSecret (recommended) or token.value" }}
{{- end }}
{{- if gt (int .Values.replicaCount) 1 }}
{{- fail "replicaCount must be 0 or 1: each runner id is one process. Install a second release with its own runner.id for more runners, or raise runner.concurrency" }}
{{- end }}
{{- end }}

{{/* Cluster-scoped names carry the release namespace: two releases of one name must not collide. */}}
{{- define "byoc-runner.clusterRbacName" -}}
{{- printf "%s-%s" .Release.Namespace (include "byoc-runner.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
