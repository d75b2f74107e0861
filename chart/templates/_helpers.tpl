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

{{/* The chart's labels on every object: commonLabels first, and the chart's own keys win. */}}
{{- define "ecr-pullthrough.labels" -}}
{{- with include "ecr-pullthrough.commonLabels" . -}}
{{ . }}
{{ end -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "ecr-pullthrough.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* commonLabels without the keys the chart sets itself (a duplicate key would be invalid YAML). */}}
{{- define "ecr-pullthrough.commonLabels" -}}
{{- $labels := omit (.Values.commonLabels | default dict) "helm.sh/chart" "app.kubernetes.io/name" "app.kubernetes.io/instance" "app.kubernetes.io/version" "app.kubernetes.io/managed-by" "app.kubernetes.io/component" -}}
{{- with $labels }}{{ toYaml . }}{{ end -}}
{{- end -}}

{{/* <base>-<suffix> within 63 characters. As before, the end of the suffix is cut when it does not fit;
     but where all of it would go (a base of 62 or 63 characters: release names of 46 characters and
     more), which made the controller's and the webhook's objects one name, the base is cut instead.
     Names that used to fit keep their name, so no upgrade renames an object. Objects added since 0.1.0
     pass a third element (`true`): their suffix is always whole, so it never collides with an old name. */}}
{{- define "ecr-pullthrough.suffixed" -}}
{{- $base := index . 0 -}}
{{- $suffix := index . 1 -}}
{{- $name := printf "%s-%s" $base $suffix | trunc 63 | trimSuffix "-" -}}
{{- if or (eq $name $base) (gt (len .) 2) -}}
{{- $name = printf "%s-%s" ($base | trunc (int (sub 62 (len $suffix))) | trimSuffix "-") $suffix -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{- define "ecr-pullthrough.controllerName" -}}
{{- include "ecr-pullthrough.suffixed" (list (include "ecr-pullthrough.fullname" .) "controller") -}}
{{- end -}}

{{- define "ecr-pullthrough.webhookName" -}}
{{- include "ecr-pullthrough.suffixed" (list (include "ecr-pullthrough.fullname" .) "webhook") -}}
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
{{- include "ecr-pullthrough.suffixed" (list (include "ecr-pullthrough.webhookName" .) "tls") -}}
{{- end -}}

{{- define "ecr-pullthrough.webhookConfigurationName" -}}
{{- include "ecr-pullthrough.fullname" . -}}
{{- end -}}

{{- define "ecr-pullthrough.statusConfigMapName" -}}
{{- include "ecr-pullthrough.suffixed" (list (include "ecr-pullthrough.fullname" .) "upstream-status") -}}
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
{{- include "ecr-pullthrough.suffixed" (list (include "ecr-pullthrough.fullname" .) "settings") -}}
{{- end -}}

{{/* Stop the render with a message that says what to set. */}}
{{- define "ecr-pullthrough.validate" -}}
{{- if and .Values.registry (or .Values.accountId .Values.region) -}}
{{- fail "set either registry, or accountId and region, not both" -}}
{{- end -}}
{{- if not (or .Values.registry (and .Values.accountId .Values.region)) -}}
{{- fail "set registry (your ECR registry host, e.g. --set registry=123456789012.dkr.ecr.us-east-1.amazonaws.com), or accountId and region" -}}
{{- end -}}
{{- if ge (float64 .Values.controller.verifySeconds) (float64 .Values.webhook.upstreamStatusMaxAgeSeconds) -}}
{{- fail (printf "controller.verifySeconds (%d) must be below webhook.upstreamStatusMaxAgeSeconds (%d): the webhook would find the status stale between two verifications and rewrite nothing" (int64 .Values.controller.verifySeconds) (int64 .Values.webhook.upstreamStatusMaxAgeSeconds)) -}}
{{- end -}}
{{- $requirements := include "ecr-pullthrough.excludeRequirements" . -}}
{{- if and (eq .Values.pullSecretMode "node-role") (eq .Values.controller.nodeRoleCredentials "instance-metadata") (hasKey .Values.controller.serviceAccount.annotations "eks.amazonaws.com/role-arn") -}}
{{- fail "pullSecretMode node-role verifies as the node role itself (controller.nodeRoleCredentials instance-metadata): remove the IRSA annotation eks.amazonaws.com/role-arn from controller.serviceAccount.annotations, or set controller.nodeRoleCredentials=mirrored-role" -}}
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

{{/* excludeNamespaceSelector as a JSON list of requirements {key, operator, values}, in the
     namespaceSelector's terms (In, NotIn, Exists, DoesNotExist). Only equality-based selectors
     (`a=b`, `a==b`, `a!=b`, `a`, `!a`, comma-separated: AND), as the controller reads them; anything
     else stops the render. */}}
{{- define "ecr-pullthrough.excludeRequirements" -}}
{{- $key := `(?:[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?` -}}
{{- $value := `(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?` -}}
{{- $requirements := list -}}
{{- range $part := splitList "," .Values.excludeNamespaceSelector -}}
{{- $text := trim $part -}}
{{- if $text -}}
{{- if regexMatch (printf `^!\s*%s$` $key) $text -}}
{{- $requirements = append $requirements (dict "key" (trim (trimPrefix "!" $text)) "operator" "DoesNotExist") -}}
{{- else if regexMatch (printf `^%s$` $key) $text -}}
{{- $requirements = append $requirements (dict "key" $text "operator" "Exists") -}}
{{- else if regexMatch (printf `^%s\s*!=\s*%s$` $key $value) $text -}}
{{- $pair := splitn "!=" 2 $text -}}
{{- $requirements = append $requirements (dict "key" (trim $pair._0) "operator" "NotIn" "values" (list (trim $pair._1))) -}}
{{- else if regexMatch (printf `^%s\s*==?\s*%s$` $key $value) $text -}}
{{- $pair := splitn "=" 2 $text -}}
{{- $requirements = append $requirements (dict "key" (trim $pair._0) "operator" "In" "values" (list (trim (trimPrefix "=" $pair._1)))) -}}
{{- else -}}
{{- fail (printf "excludeNamespaceSelector: %q is not an equality-based label selector requirement (key=value, key!=value, key or !key; comma-separated requirements must all hold)" $text) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $requirements -}}
{{- end -}}

{{/* The webhook's namespaceSelector entries: excluded are the namespaces that match every requirement
     r1..rn, so admitted are those where some ri fails. One selector can only AND, so entry i admits
     the namespaces where r1..r(i-1) hold and ri fails: disjoint, together exactly the complement, and
     a pod goes to one entry at most. Each is a JSON list of matchExpressions, to be ANDed with the
     opt-out label and excludeNamespaces. */}}
{{- define "ecr-pullthrough.webhookEntries" -}}
{{- $negation := dict "In" "NotIn" "NotIn" "In" "Exists" "DoesNotExist" "DoesNotExist" "Exists" -}}
{{- $requirements := include "ecr-pullthrough.excludeRequirements" . | fromJsonArray -}}
{{- $entries := list -}}
{{- if not $requirements -}}
{{- $entries = append $entries (list) -}}
{{- end -}}
{{- range $i, $failing := $requirements -}}
{{- $expressions := slice $requirements 0 $i -}}
{{- $expressions = append $expressions (set (deepCopy $failing) "operator" (get $negation $failing.operator)) -}}
{{- $entries = append $entries $expressions -}}
{{- end -}}
{{- toJson $entries -}}
{{- end -}}

{{/* Non-empty when the webhook's PodDisruptionBudget can be satisfied: maxUnavailable always can;
     minAvailable only while it asks for fewer pods than there are replicas (a percentage rounds up,
     as the disruption controller rounds it). A budget nobody can satisfy blocks every node drain. */}}
{{- define "ecr-pullthrough.pdbSatisfiable" -}}
{{- $pdb := .Values.webhook.podDisruptionBudget -}}
{{- $replicas := int64 .Values.webhook.replicas -}}
{{- if not (kindIs "invalid" $pdb.maxUnavailable) -}}
true
{{- else -}}
{{- $min := $pdb.minAvailable | toString -}}
{{- $needed := int64 $min -}}
{{- if hasSuffix "%" $min -}}
{{- $needed = div (add (mul $replicas (trimSuffix "%" $min | int64)) 99) 100 -}}
{{- end -}}
{{- if lt $needed $replicas -}}
true
{{- end -}}
{{- end -}}
{{- end -}}
