{{/* Names and labels. */}}
{{- define "meterline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "meterline.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "meterline.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "meterline.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "meterline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meterline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one role's objects: (dict "root" $ "role" "worker"). */}}
{{- define "meterline.roleLabels" -}}
{{ include "meterline.labels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "meterline.roleSelectorLabels" -}}
{{ include "meterline.selectorLabels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "meterline.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
The pull secrets of every pod: imagePullSecrets, then a parent chart's global.imagePullSecrets (entries
{name: …} or plain names), each name once.
*/}}
{{- define "meterline.imagePullSecrets" -}}
{{- $global := .Values.global | default dict -}}
{{- $names := list -}}
{{- range concat (.Values.imagePullSecrets | default list) ($global.imagePullSecrets | default list) -}}
{{- $name := "" -}}
{{- if kindIs "string" . }}{{ $name = . }}{{ else if kindIs "map" . }}{{ $name = get . "name" }}{{ end -}}
{{- if and $name (not (has $name $names)) -}}
{{- $names = append $names $name -}}
{{- end -}}
{{- end -}}
{{- range $names }}
- name: {{ . }}
{{- end -}}
{{- end -}}

{{/*
A role's topologySpreadConstraints: (dict "root" $ "role" …). A constraint without labelSelector spreads the
role's own pods.
*/}}
{{- define "meterline.topologySpreadConstraints" -}}
{{- $v := index .root.Values .role -}}
{{- $selector := include "meterline.roleSelectorLabels" . | fromYaml -}}
{{- range $v.topologySpreadConstraints }}
{{- $c := deepCopy . -}}
{{- if not (hasKey $c "labelSelector") -}}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $selector) -}}
{{- end }}
- {{- toYaml $c | nindent 2 }}
{{- end -}}
{{- end -}}

{{/*
A role's ServiceAccount: (dict "root" $ "role" …). The registration's is set apart, under
registration.serviceAccount, so that its IAM role is its own.
*/}}
{{- define "meterline.serviceAccountName" -}}
{{- $root := .root -}}
{{- $sa := $root.Values.serviceAccount -}}
{{- $override := ternary $sa.workerName $sa.processorName (eq .role "worker") -}}
{{- $create := $sa.create -}}
{{- if eq .role "registration" -}}
{{- $override = $root.Values.registration.serviceAccount.name -}}
{{- $create = $root.Values.registration.serviceAccount.create -}}
{{- end -}}
{{- if $override -}}
{{- $override -}}
{{- else if $create -}}
{{- printf "%s-%s" (include "meterline.fullname" $root | trunc 52 | trimSuffix "-") .role -}}
{{- else -}}
default
{{- end -}}
{{- end -}}

{{/* The customers file is mounted for SaaS, and in container mode only when one is given. */}}
{{- define "meterline.hasCustomers" -}}
{{- if or (eq .Values.metering.mode "saas") (gt (len .Values.metering.customers) 0) -}}true{{- end -}}
{{- end -}}

{{/*
A duration as meterline writes them (250ms, 30s, 5m, 2h, 1d, or plain milliseconds) in milliseconds.
*/}}
{{- define "meterline.ms" -}}
{{- $num := regexReplaceAll "^([0-9]+(\\.[0-9]+)?)(ms|s|m|h|d)?$" . "${1}" -}}
{{- $unit := regexReplaceAll "^[0-9]+(\\.[0-9]+)?" . "" -}}
{{- $factor := get (dict "" 1 "ms" 1 "s" 1000 "m" 60000 "h" 3600000 "d" 86400000) $unit -}}
{{- mulf (float64 $num) $factor | int64 -}}
{{- end -}}

{{/*
The start-up rules of meterline's config (src/config/config.ts), checked at install time so that a
release never rolls out pods that refuse to start.
*/}}
{{- define "meterline.validate" -}}
{{- $c := .Values.config -}}
{{- $grace := include "meterline.ms" $c.windowGrace | int64 -}}
{{- $maxDelay := include "meterline.ms" $c.windowMaxDelay | int64 -}}
{{- $commit := include "meterline.ms" $c.commitInterval | int64 -}}
{{- $margin := include "meterline.ms" $c.submitMargin | int64 -}}
{{- if gt $grace $maxDelay -}}
{{- fail "config.windowGrace must not exceed config.windowMaxDelay" -}}
{{- end -}}
{{- $windowH := ternary 6 24 (eq .Values.metering.mode "container") -}}
{{- if ge (add $maxDelay $commit $margin) (mul $windowH 3600000) -}}
{{- fail (printf "config.windowMaxDelay + config.commitInterval + config.submitMargin must stay under the %dh AWS acceptance window of metering.mode %s" $windowH .Values.metering.mode) -}}
{{- end -}}
{{- $produceTimeout := include "meterline.ms" $c.produceTimeout | int64 -}}
{{- if lt $produceTimeout 1000 -}}
{{- fail "config.produceTimeout must be at least 1s" -}}
{{- end -}}
{{- if le (include "meterline.ms" $c.produceUnhealthyAfter | int64) $produceTimeout -}}
{{- fail "config.produceUnhealthyAfter must be longer than config.produceTimeout (one failed send must not restart the pod)" -}}
{{- end -}}
{{- if lt (include "meterline.ms" .Values.redis.commandTimeout | int64) 100 -}}
{{- fail "redis.commandTimeout must be at least 100ms (0 would turn the timeout off)" -}}
{{- end -}}
{{- if and (not .Values.redis.cluster) (contains "," .Values.redis.url) -}}
{{- fail "redis.url: a list of seed URLs needs redis.cluster: true" -}}
{{- end -}}
{{- if and .Values.registration.enabled (ne .Values.metering.mode "saas") -}}
{{- fail "registration.enabled: the registration service (ResolveCustomer) is for SaaS products only; metering.mode is container" -}}
{{- end -}}
{{- if and .Values.console.enabled (not .Values.console.tokens.existingSecret) (not .Values.console.identityHeader) -}}
{{- fail "console.enabled: set console.tokens.existingSecret or console.identityHeader: the console does not start open" -}}
{{- end -}}
{{- if and .Values.console.enabled (eq (int .Values.console.port) (int .Values.ops.port)) -}}
{{- fail (printf "console.port: %d is already ops.port (metrics and health); choose another" (int .Values.console.port)) -}}
{{- end -}}
{{- if and .Values.registration.enabled (eq (int .Values.registration.port) (int .Values.ops.port)) -}}
{{- fail (printf "registration.port: %d is already ops.port (metrics and health); choose another" (int .Values.registration.port)) -}}
{{- end -}}
{{- end -}}

{{/* REDIS_URL with the password from the Secret, through Kubernetes' $(VAR) expansion. */}}
{{- define "meterline.redisUrl" -}}
{{- $auth := .Values.redis.auth -}}
{{- if $auth.existingSecret -}}
{{- $cred := printf "%s:$(METERLINE_REDIS_PASSWORD)@" $auth.username -}}
{{- $urls := list -}}
{{- range splitList "," .Values.redis.url -}}
{{- $urls = append $urls (regexReplaceAll "^(rediss?://)" (trim .) (printf "${1}%s" $cred)) -}}
{{- end -}}
{{- join "," $urls -}}
{{- else -}}
{{- .Values.redis.url -}}
{{- end -}}
{{- end -}}

{{- define "meterline.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "meterline.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
Kafka TLS and SASL (src/kafka/security.ts), for the Deployments and the topics Job alike. The SASL
credentials come from the Secret by reference.
*/}}
{{- define "meterline.kafkaSecurityEnv" -}}
{{- $k := .Values.kafka -}}
{{- if $k.tls.enabled }}
- name: KAFKA_SSL
  value: "true"
- name: KAFKA_SSL_REJECT_UNAUTHORIZED
  value: {{ $k.tls.rejectUnauthorized | quote }}
{{- if $k.tls.caSecret.name }}
- name: KAFKA_SSL_CA_FILE
  value: /etc/meterline-kafka-ca/{{ $k.tls.caSecret.key }}
{{- end }}
{{- end }}
{{- if $k.sasl.mechanism }}
- name: KAFKA_SASL_MECHANISM
  value: {{ $k.sasl.mechanism | quote }}
{{- if ne $k.sasl.mechanism "aws-msk-iam" }}
- name: KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $k.sasl.existingSecret }}
      key: {{ $k.sasl.usernameKey }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $k.sasl.existingSecret }}
      key: {{ $k.sasl.passwordKey }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "meterline.kafkaCaMount" -}}
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.caSecret.name }}
- name: kafka-ca
  mountPath: /etc/meterline-kafka-ca
  readOnly: true
{{- end }}
{{- end -}}

{{- define "meterline.kafkaCaVolume" -}}
{{- $ca := .Values.kafka.tls.caSecret -}}
{{- if and .Values.kafka.tls.enabled $ca.name }}
- name: kafka-ca
  secret:
    secretName: {{ $ca.name }}
    items:
      - key: {{ $ca.key }}
        path: {{ $ca.key }}
{{- end }}
{{- end -}}

