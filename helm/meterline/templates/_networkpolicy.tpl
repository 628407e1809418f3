{{/*
NetworkPolicy helpers. A target (networkPolicy.<name>: cidrs, peers, ports) becomes one egress rule: its
ports (TCP) to its cidrs and peers, or to any address when both are empty. The ports are the target's
`ports` plus the ports of the addresses the release is configured with (kafka.brokers, redis.url,
schemaRegistry.url, tracing.otlpEndpoint, aws.meteringEndpoint), so a default install reaches its
brokers, Redis, collector and emulator on whatever ports they listen on.
*/}}

{{/*
The ports of a list of addresses (host:port or URLs), as a JSON list of integers: (dict "addresses" (list …)
"default" <port when an address names none and its scheme gives none>).
*/}}
{{- define "meterline.np.addressPorts" -}}
{{- $ports := list -}}
{{- $byScheme := dict "http" 80 "https" 443 "redis" 6379 "rediss" 6379 -}}
{{- range .addresses -}}
{{- $a := trim (toString .) -}}
{{- if $a -}}
{{- $scheme := lower (trimSuffix "://" (regexFind "^[a-zA-Z][a-zA-Z0-9+.-]*://" $a)) -}}
{{- $hostPort := regexReplaceAll "^[a-zA-Z][a-zA-Z0-9+.-]*://" $a "" -}}
{{- $hostPort = regexReplaceAll "[/?#].*$" $hostPort "" -}}
{{- $hostPort = regexReplaceAll "^.*@" $hostPort "" -}}
{{- $port := trimPrefix ":" (regexFind ":[0-9]+$" $hostPort) -}}
{{- if $port -}}
{{- $ports = append $ports (atoi $port) -}}
{{- else if hasKey $byScheme $scheme -}}
{{- $ports = append $ports (index $byScheme $scheme) -}}
{{- else if $.default -}}
{{- $ports = append $ports (int $.default) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $ports -}}
{{- end -}}

{{/* A target's ports, configured and from its addresses, without repeats: (dict "root" $ "name" <target>). */}}
{{- define "meterline.np.ports" -}}
{{- $v := .root.Values -}}
{{- $t := index $v.networkPolicy .name -}}
{{- $from := dict "addresses" (list) "default" 0 -}}
{{- if eq .name "kafka" -}}
{{- $from = dict "addresses" $v.kafka.brokers "default" 9092 -}}
{{- else if eq .name "redis" -}}
{{- $from = dict "addresses" (splitList "," $v.redis.url) "default" 6379 -}}
{{- else if eq .name "schemaRegistry" -}}
{{- $from = dict "addresses" (list $v.schemaRegistry.url) "default" 0 -}}
{{- else if eq .name "otlp" -}}
{{- $from = dict "addresses" (list $v.tracing.otlpEndpoint) "default" 0 -}}
{{- else if eq .name "aws" -}}
{{- $from = dict "addresses" (list $v.aws.meteringEndpoint) "default" 0 -}}
{{- else if eq .name "jaeger" -}}
{{- $from = dict "addresses" (list $v.console.jaegerUrl) "default" 0 -}}
{{- end -}}
{{- $ports := list -}}
{{- range concat $t.ports (include "meterline.np.addressPorts" $from | fromJsonArray) -}}
{{- $ports = append $ports (int .) -}}
{{- end -}}
{{- toJson (uniq $ports) -}}
{{- end -}}

{{/*
Egress rules: (dict "root" $ "targets" (list <target name> …)), each target on its ports (TCP), then DNS
(UDP and TCP) and networkPolicy.extraEgress.
*/}}
{{- define "meterline.np.egress" -}}
{{- $root := .root -}}
{{- $np := $root.Values.networkPolicy -}}
{{- range .targets }}
{{- $t := index $np . }}
# {{ . }}
- ports:
    {{- range include "meterline.np.ports" (dict "root" $root "name" .) | fromJsonArray }}
    - port: {{ int . }}
      protocol: TCP
    {{- end }}
  {{- if or $t.cidrs $t.peers }}
  to:
    {{- range $t.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
    {{- with $t.peers }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
{{- end }}
# dns
- ports:
    {{- range $np.dns.ports }}
    - port: {{ int . }}
      protocol: UDP
    - port: {{ int . }}
      protocol: TCP
    {{- end }}
  {{- if or $np.dns.cidrs $np.dns.peers }}
  to:
    {{- range $np.dns.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
    {{- with $np.dns.peers }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
{{- with $np.extraEgress }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
One role's NetworkPolicy: (dict "root" $ "role" <role> "targets" (list …) "ingress" <ingress rules YAML or "">
"annotations" <dict> "extraEgress" <list of egress rules>).
*/}}
{{- define "meterline.np.rolePolicy" -}}
{{- $ctx := dict "root" .root "role" .role -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "meterline.fullname" .root }}-{{ .role }}
  labels:
    {{- include "meterline.roleLabels" $ctx | nindent 4 }}
  {{- with .annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  podSelector:
    matchLabels:
      {{- include "meterline.roleSelectorLabels" $ctx | nindent 6 }}
  policyTypes: [Ingress, Egress]
  {{- if .ingress }}
  ingress:
    {{- .ingress | trim | nindent 4 }}
  {{- else }}
  ingress: []
  {{- end }}
  egress:
    {{- include "meterline.np.egress" (dict "root" .root "targets" .targets) | trim | nindent 4 }}
    {{- with .extraEgress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/* Ingress to a named container port from a list of peers (empty: from anywhere): (dict "port" … "from" …). */}}
{{- define "meterline.np.ingressRule" -}}
- ports:
    - port: {{ .port }}
      protocol: TCP
  {{- with .from }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/*
"true" when aws.meteringEndpoint points at something other than AWS (the meterline emulator): set, and its
host is not an AWS domain (amazonaws.com, amazonaws.com.cn, api.aws — a VPC endpoint's name is one).
Empty otherwise: calls reach AWS and bill real buyers.
*/}}
{{- define "meterline.awsIsEmulator" -}}
{{- $e := trim .Values.aws.meteringEndpoint -}}
{{- if $e -}}
{{- $host := regexReplaceAll "^[a-zA-Z][a-zA-Z0-9+.-]*://" $e "" -}}
{{- $host = regexReplaceAll "[/?#].*$" $host "" -}}
{{- $host = regexReplaceAll "^.*@" $host "" -}}
{{- $host = lower (trimSuffix "." (regexReplaceAll ":[0-9]+$" $host "")) -}}
{{- if not (regexMatch "(^|\\.)(amazonaws\\.com|amazonaws\\.com\\.cn|api\\.aws|c2s\\.ic\\.gov|sc2s\\.sgov\\.gov)$" $host) -}}
true
{{- end -}}
{{- end -}}
{{- end -}}
