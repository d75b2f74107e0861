{{/* Names are truncated to 63 characters: the limit of a label value and a DNS label. */}}
{{- define "ecr-pullthrough.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ecr-pullthrough.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "ecr-pullthrough.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "ecr-pullthrough.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ecr-pullthrough.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "ecr-pullthrough.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "ecr-pullthrough.controllerName" -}}
{{- printf "%s-controller" (include "ecr-pullthrough.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ecr-pullthrough.webhookName" -}}
{{- printf "%s-webhook" (include "ecr-pullthrough.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ecr-pullthrough.leaseName" -}}
{{- include "ecr-pullthrough.controllerName" . -}}
{{- end -}}
