{{/* Names and labels. */}}
{{- define "ferry.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}{{ .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" }}{{ end }}
{{- end }}

{{- define "ferry.labels" -}}
app.kubernetes.io/name: ferry
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* Selector labels of one service: (dict "root" $ "name" "gateway"). */}}
{{- define "ferry.selector" -}}
app.kubernetes.io/name: ferry
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{/* The six services in start order, and what each listens with (shared/services.py's table). */}}
{{- define "ferry.services" -}}
registry: {port: 8081, portEnv: FERRY_REGISTRY_PORT, hostEnv: FERRY_REGISTRY_HOST, database: true}
trainer: {port: 8083, portEnv: FERRY_TRAINER_METRICS_PORT, hostEnv: FERRY_TRAINER_HOST, database: false}
evaluator: {port: 8084, portEnv: FERRY_EVALUATOR_PORT, hostEnv: FERRY_EVALUATOR_HOST, database: true}
gateway: {port: 8080, portEnv: FERRY_GATEWAY_PORT, hostEnv: FERRY_GATEWAY_HOST, database: false}
monitor: {port: 8082, portEnv: FERRY_MONITOR_PORT, hostEnv: FERRY_MONITOR_HOST, database: true}
console: {port: 8085, portEnv: FERRY_CONSOLE_PORT, hostEnv: FERRY_CONSOLE_HOST, database: false}
{{- end }}

{{/* The consumers KEDA scales on their group's lag: the group and the topics it reads (design names),
     as shared/kafka_access.py's ACCESS and each service's consumer_group default say. */}}
{{- define "ferry.lagConsumers" -}}
trainer: {group: trainer, topics: [training.requested]}
evaluator: {group: evaluator, topics: [model.registered, alert]}
registry: {group: registry, topics: [model.trained, model.decided]}
{{- end }}

{{- define "ferry.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "ferry.url" -}}
http://{{ include "ferry.fullname" .root }}-{{ .name }}:{{ (index (include "ferry.services" .root | fromYaml) .name).port }}
{{- end }}

{{- define "ferry.tokensSecret" -}}
{{ .Values.apiTokens.existingSecret | default (printf "%s-api-tokens" (include "ferry.fullname" .)) }}
{{- end }}

{{- define "ferry.kafkaUser" -}}
{{ index .root.Values.kafka.sasl.usernames .name | default .name }}
{{- end }}

{{- define "ferry.secured" -}}
{{- if eq .Values.kafka.securityProtocol "SASL_SSL" }}true{{ end }}
{{- end }}
