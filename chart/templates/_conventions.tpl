{{/* Helpers of the operators' conventions (chart 0.3.0): pod labels, ServiceAccounts, scheduling,
     deprecations, the registry host NOTES prints, defaults for `helm upgrade --reuse-values`. */}}

{{/* A pod template's labels: commonLabels, the component's podLabels, then the selector labels
     (which win: a Deployment whose pods do not match its selector is refused).
     Call with (dict "root" $ "component" "webhook" "podLabels" .Values.webhook.podLabels). */}}
{{- define "ecr-pullthrough.podLabels" -}}
{{- $root := .root -}}
{{- $labels := merge (dict) (.podLabels | default dict) ($root.Values.commonLabels | default dict) -}}
{{- range $key := list "app.kubernetes.io/name" "app.kubernetes.io/instance" "app.kubernetes.io/component" }}{{ $_ := unset $labels $key }}{{ end -}}
{{- with $labels -}}
{{ toYaml . }}
{{ end -}}
{{ include "ecr-pullthrough.selectorLabels" $root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The ServiceAccounts. The controller's is the identity IRSA trusts and the admission policy names;
     an existing one (serviceAccount.create false) must be named. The webhook's needs no permission:
     without a name and not created, it is the namespace's `default`. */}}
{{- define "ecr-pullthrough.controllerServiceAccountName" -}}
{{- $account := .Values.controller.serviceAccount -}}
{{- if $account.name -}}
{{- $account.name -}}
{{- else if $account.create -}}
{{- include "ecr-pullthrough.controllerName" . -}}
{{- else -}}
{{- fail "controller.serviceAccount.create is false: set controller.serviceAccount.name to the ServiceAccount you created (the chart binds its RBAC and admission policy to it)" -}}
{{- end -}}
{{- end -}}

{{- define "ecr-pullthrough.webhookServiceAccountName" -}}
{{- $account := .Values.webhook.serviceAccount -}}
{{- $account.name | default (ternary (include "ecr-pullthrough.webhookName" .) "default" $account.create) -}}
{{- end -}}

{{/* topologySpreadConstraints with the component's own pods as the labelSelector where an entry names none.
     Call with (dict "root" $ "component" "webhook" "constraints" .Values.webhook.topologySpreadConstraints). */}}
{{- define "ecr-pullthrough.topologySpreadConstraints" -}}
{{- $selector := dict "matchLabels" (include "ecr-pullthrough.selectorLabels" .root | fromYaml | merge (dict "app.kubernetes.io/component" .component)) -}}
{{- $constraints := list -}}
{{- range .constraints -}}
{{- $constraint := deepCopy . -}}
{{- if not (hasKey $constraint "labelSelector") }}{{ $_ := set $constraint "labelSelector" $selector }}{{ end -}}
{{- $constraints = append $constraints $constraint -}}
{{- end -}}
{{- with $constraints }}{{ toYaml . }}{{ end -}}
{{- end -}}

{{/* The webhook's topologySpreadConstraints, with the deprecated `webhook.topologySpread: false` (0.1.0, 0.2.0) still meaning none. */}}
{{- define "ecr-pullthrough.webhookTopologySpreadConstraints" -}}
{{- if not (eq (toString .Values.webhook.topologySpread) "false") -}}
{{- include "ecr-pullthrough.topologySpreadConstraints" (dict "root" . "component" "webhook" "constraints" .Values.webhook.topologySpreadConstraints) -}}
{{- end -}}
{{- end -}}

{{/* What a deprecated value still in use should be replaced with, one line each, for NOTES. */}}
{{- define "ecr-pullthrough.deprecations" -}}
{{- if not (kindIs "invalid" .Values.webhook.topologySpread) }}
- webhook.topologySpread is deprecated since chart 0.3.0 and will be removed: {{ if .Values.webhook.topologySpread }}remove it (webhook.topologySpreadConstraints is used, and by default spreads across nodes and zones as before; after `helm upgrade --reuse-values` from chart 0.1.0 or 0.2.0 it is that chart's default, carried over: upgrade once with --reset-then-reuse-values){{ else }}set webhook.topologySpreadConstraints: [] instead (false still renders no constraints){{ end }}.
{{- end }}
{{- end -}}

{{/* Pod-level settings both Deployments share: strategy and history. Call with the component's values. */}}
{{- define "ecr-pullthrough.deploymentSpec" -}}
revisionHistoryLimit: {{ int64 .revisionHistoryLimit }}
{{- with .updateStrategy }}
strategy:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The chart's labels plus an object's own extra labels (which never override the chart's).
     Call with (dict "root" $ "component" "controller" "extra" .Values.controller.serviceAccount.labels). */}}
{{- define "ecr-pullthrough.labelsWith" -}}
{{- $own := include "ecr-pullthrough.labels" .root | fromYaml -}}
{{- with .component }}{{ $_ := set $own "app.kubernetes.io/component" . }}{{ end -}}
{{- toYaml (merge (dict) $own (.extra | default dict)) -}}
{{- end -}}

{{/* The ECR registry host the webhook rewrites to, as the program derives it (settings.py):
     `registry` lowercased, or <accountId>.dkr.ecr.<region>.amazonaws.com, `.com.cn` in the China regions. */}}
{{- define "ecr-pullthrough.registryHost" -}}
{{- if .Values.registry -}}
{{- .Values.registry | trim | lower -}}
{{- else -}}
{{- printf "%s.dkr.ecr.%s.%s" (toString .Values.accountId) .Values.region (ternary "amazonaws.com.cn" "amazonaws.com" (hasPrefix "cn-" .Values.region)) -}}
{{- end -}}
{{- end -}}

{{/* `helm upgrade --reuse-values` from an older chart renders with that chart's values, without the keys
     added since: fill those in with their defaults (upgrade-defaults.yaml, kept equal to values.yaml by a test).
     Only then: a key you set to null on purpose stays unset. Call at the top of each template. */}}
{{- define "ecr-pullthrough.fillDefaults" -}}
{{- if not (hasKey .Values.controller "leaderElection") -}}
{{- $_ := merge .Values (.Files.Get "upgrade-defaults.yaml" | fromYaml) -}}
{{- end -}}
{{- end -}}

{{/* Stop the render on conventions' values that cannot work together (with ecr-pullthrough.validate). */}}
{{- define "ecr-pullthrough.validateConventions" -}}
{{- $election := .Values.controller.leaderElection -}}
{{- if not (and (lt (float64 $election.retrySeconds) (float64 $election.renewDeadlineSeconds)) (lt (float64 $election.renewDeadlineSeconds) (float64 $election.leaseSeconds))) -}}
{{- fail (printf "controller.leaderElection: need retrySeconds (%d) < renewDeadlineSeconds (%d) < leaseSeconds (%d)" (int64 $election.retrySeconds) (int64 $election.renewDeadlineSeconds) (int64 $election.leaseSeconds)) -}}
{{- end -}}
{{- $account := include "ecr-pullthrough.controllerServiceAccountName" . -}}
{{- end -}}
