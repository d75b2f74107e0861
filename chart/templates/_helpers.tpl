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

{{- define "ecr-pullthrough.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ecr-pullthrough.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ecr-pullthrough.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The serving certificate's Secret and the webhook configuration's name, shared by the controller and the webhook. */}}
{{- define "ecr-pullthrough.tlsSecretName" -}}
{{- printf "%s-tls" (include "ecr-pullthrough.webhookName" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ecr-pullthrough.webhookConfigurationName" -}}
{{- include "ecr-pullthrough.fullname" . -}}
{{- end -}}

{{- define "ecr-pullthrough.statusConfigMapName" -}}
{{- printf "%s-upstream-status" (include "ecr-pullthrough.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* This installation's name on the Secrets its controller owns (label ecr-pullthrough/instance):
     <release namespace>.<release name>, so two releases never write each other's pull Secret.
     A label value is at most 63 characters: a longer one keeps 54 and a hash of the whole. */}}
{{- define "ecr-pullthrough.instance" -}}
{{- $instance := printf "%s.%s" .Release.Namespace .Release.Name -}}
{{- if gt (len $instance) 63 -}}
{{- $instance = printf "%s-%s" ($instance | trunc 54) ($instance | sha256sum | trunc 8) -}}
{{- end -}}
{{- $instance -}}
{{- end -}}

{{- define "ecr-pullthrough.configName" -}}
{{- printf "%s-settings" (include "ecr-pullthrough.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Stop the render with a message that says what to set. */}}
{{- define "ecr-pullthrough.validate" -}}
{{- if and .Values.registry (or .Values.accountId .Values.region) -}}
{{- fail "set either registry, or accountId and region, not both" -}}
{{- end -}}
{{- if not (or .Values.registry (and .Values.accountId .Values.region)) -}}
{{- fail "set registry (your ECR registry host, e.g. --set registry=123456789012.dkr.ecr.us-east-1.amazonaws.com), or accountId and region" -}}
{{- end -}}
{{- end -}}

{{- define "ecr-pullthrough.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "ecr-pullthrough.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}
