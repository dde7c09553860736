{{/* Names, labels and shared values of the AutoGit chart. */}}
{{- define "autogit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "autogit.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "autogit.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "autogit.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "autogit.selectorLabels" -}}
app.kubernetes.io/name: {{ include "autogit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "autogit.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "autogit.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "autogit.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "autogit.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The runner managers' own ServiceAccount: gitlab-runner's Kubernetes executor creates job pods with it. */}}
{{- define "autogit.runnerServiceAccountName" -}}
{{- default (printf "%s-runner" (include "autogit.fullname" .)) .Values.runners.serviceAccountName }}
{{- end }}

{{- define "autogit.runnersNamespace" -}}
{{- default .Release.Namespace .Values.runners.namespace }}
{{- end }}

{{/* The Secret holding gitlab-token (and webhook-secret): the operator's, or the chart's own. */}}
{{- define "autogit.secretName" -}}
{{- if .Values.gitlab.existingSecret }}
{{- .Values.gitlab.existingSecret }}
{{- else if .Values.gitlab.token }}
{{- include "autogit.fullname" . }}
{{- else }}
{{- fail "gitlab.existingSecret (a Secret with key gitlab-token) or gitlab.token is required" }}
{{- end }}
{{- end }}

{{- define "autogit.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* agent.yaml's runner: the runtime (ADR-013: manager pods in the runners' namespace under the
runners' ServiceAccount, the API server from the agent's own in-cluster ServiceAccount) and images. */}}
{{- define "autogit.runnerConfig" -}}
{{- $r := .Values.runners }}
{{- $runner := dict "runtime" $r.runtime "docker" (dict "config_dir" "/var/lib/autogit/runners") "pull_policy" $r.jobPullPolicy }}
{{- if eq $r.runtime "kubernetes" }}
{{- $_ := set $runner "kubernetes" (dict "namespace" (include "autogit.runnersNamespace" .) "service_account" (include "autogit.runnerServiceAccountName" .) "image_pull_policy" $r.imagePullPolicy) }}
{{- end }}
{{- with $r.image }}{{ $_ := set $runner "image" . }}{{ end }}
{{- with $r.jobImage }}{{ $_ := set $runner "job_image" . }}{{ end }}
{{- with $r.helperImage }}{{ $_ := set $runner "helper_image" . }}{{ end }}
{{- toYaml $runner }}
{{- end }}

{{/* agent.yaml: the chart's paths and listeners, then the operator's `config` on top. The fleet's
presence registration is off: the cluster is one logical agent (its replicas share a Lease), and a
presence outlives `helm uninstall`; config.fleet.enabled=true joins a fleet of hosts (ADR-009). */}}
{{- define "autogit.agentConfig" -}}
{{- $chart := dict
  "api" (dict "socket" "/run/autogit/agent.sock" "metrics_listen" (printf "0.0.0.0:%d" (int .Values.metrics.port))
              "health_listen" (printf "0.0.0.0:%d" (int .Values.health.port)))
  "webhook" (dict "enabled" .Values.webhook.enabled "listen" (printf "0.0.0.0:%d" (int .Values.webhook.port)) "path" .Values.webhook.path)
  "runner" (include "autogit.runnerConfig" . | fromYaml)
  "fleet" (dict "enabled" false)
  "state_file" "/var/lib/autogit/state.json" }}
{{- if .Values.gitlab.url }}
{{- $_ := set $chart "gitlab" (dict "url" .Values.gitlab.url) }}
{{- end }}
{{- if .Values.highAvailability.enabled }}
{{- $ha := .Values.highAvailability }}
{{- $_ := set $chart "leader_election" (dict "enabled" true "lease_name" (include "autogit.fullname" .) "namespace" .Release.Namespace "lease_duration" (int $ha.leaseDuration) "renew_deadline" $ha.renewDeadline "retry_period" $ha.retryPeriod) }}
{{- /* one logical agent: every replica manages the same runners (docs/operations/high-availability.md) */}}
{{- $_ := set $chart "hostname" (include "autogit.fullname" .) }}
{{- end }}
{{- toYaml (mergeOverwrite $chart (deepCopy .Values.config)) }}
{{- end }}
