{{/* One role's Deployment: (dict "root" $ "role" "processor"|"worker"|"registration"|"console"). */}}
{{- define "meterline.deployment" -}}
{{- $root := .root -}}
{{- $role := .role -}}
{{- $v := index $root.Values $role -}}
{{- $ctx := dict "root" $root "role" $role -}}
{{- /* The registration service does not use Kafka: no Kafka credentials or CA reach it. */ -}}
{{- $kafka := ne $role "registration" -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "meterline.fullname" $root }}-{{ $role }}
  labels:
    {{- include "meterline.roleLabels" $ctx | nindent 4 }}
spec:
  {{- if not (and (eq $role "worker") $v.autoscaling.enabled) }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "meterline.roleSelectorLabels" $ctx | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      labels:
        {{- include "meterline.roleSelectorLabels" $ctx | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        # A change of configuration, plan or customers rolls the pods.
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "meterline.serviceAccountName" $ctx }}
      automountServiceAccountToken: {{ $root.Values.serviceAccount.automountToken }}
      # No Docker-link variables: a Service named meterline-registration would otherwise inject
      # METERLINE_REGISTRATION_* into every pod of the namespace, where they read as meterline config.
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      securityContext:
        {{- include "meterline.podSecurityContext" $root | nindent 8 }}
      {{- with include "meterline.imagePullSecrets" $root | trim }}
      imagePullSecrets:
        {{- . | nindent 8 }}
      {{- end }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . | quote }}
      {{- end }}
      {{- with include "meterline.topologySpreadConstraints" $ctx | trim }}
      topologySpreadConstraints:
        {{- . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ $role }}
          image: {{ include "meterline.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          # The image's entrypoint is `npm run meterline`'s command: node with the OpenTelemetry preload, src/cli/main.ts.
          args: [{{ $role | quote }}]
          envFrom:
            - configMapRef:
                name: {{ include "meterline.fullname" $root }}-config
            {{- with $v.extraEnvFrom }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          env:
            - name: OTEL_SERVICE_NAME
              value: meterline-{{ $role }}
            {{- if eq $role "processor" }}
            # Dedupe id hashes beyond the memory budget spill here (a cache, rebuilt from Redis on a claim).
            - name: METERLINE_DEDUPE_SPILL_DIR
              value: /var/lib/meterline/dedupe
            - name: METERLINE_DEDUPE_MEMORY_IDS
              value: {{ $v.dedupe.memoryIds | quote }}
            {{- end }}
            {{- with $root.Values.redis.auth.existingSecret }}
            - name: METERLINE_REDIS_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: {{ . }}
                  key: {{ $root.Values.redis.auth.passwordKey }}
            {{- end }}
            - name: REDIS_URL
              value: {{ include "meterline.redisUrl" $root | quote }}
            {{- with $root.Values.redis.tls.caSecret.name }}
            - name: REDIS_TLS_CA_FILE
              value: /etc/meterline-redis-ca/{{ $root.Values.redis.tls.caSecret.key }}
            {{- end }}
            {{- if $kafka }}
            {{- with include "meterline.kafkaSecurityEnv" $root | trim }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- end }}
            {{- if eq $role "registration" }}
            - name: METERLINE_REGISTRATION_LISTEN_PORT
              value: {{ $v.port | quote }}
            {{- with $v.redirectUrl }}
            - name: METERLINE_REGISTRATION_REDIRECT_URL
              value: {{ . | quote }}
            {{- end }}
            {{- with $v.snsTopicArns }}
            - name: METERLINE_SNS_TOPIC_ARNS
              value: {{ join "," . | quote }}
            {{- end }}
            {{- with $v.eventsApiKey.existingSecret }}
            - name: METERLINE_EVENTS_API_KEY
              valueFrom:
                secretKeyRef:
                  name: {{ . }}
                  key: {{ $v.eventsApiKey.key }}
            {{- end }}
            {{- with $v.linkApiKey.existingSecret }}
            - name: METERLINE_LINK_API_KEY
              valueFrom:
                secretKeyRef:
                  name: {{ . }}
                  key: {{ $v.linkApiKey.key }}
            {{- end }}
            {{- with $v.handoffSecret.existingSecret }}
            - name: METERLINE_HANDOFF_SIGNING_SECRET
              valueFrom:
                secretKeyRef:
                  name: {{ . }}
                  key: {{ $v.handoffSecret.key }}
            {{- end }}
            {{- end }}
            {{- if eq $role "console" }}
            - name: METERLINE_CONSOLE_PORT
              value: {{ $v.port | quote }}
            {{- with $v.tokens.existingSecret }}
            - name: METERLINE_CONSOLE_TOKENS
              valueFrom:
                secretKeyRef:
                  name: {{ . }}
                  key: {{ $v.tokens.key }}
            {{- end }}
            {{- with $v.identityHeader }}
            - name: METERLINE_CONSOLE_IDENTITY_HEADER
              value: {{ . | quote }}
            {{- end }}
            {{- with $v.operators }}
            - name: METERLINE_CONSOLE_OPERATORS
              value: {{ join "," . | quote }}
            {{- end }}
            {{- with $v.jaegerUrl }}
            - name: METERLINE_JAEGER_URL
              value: {{ . | quote }}
            {{- end }}
            {{- end }}
            {{- if $root.Values.extraCaCerts.existingSecret }}
            - name: NODE_EXTRA_CA_CERTS
              value: /etc/meterline-ca/{{ $root.Values.extraCaCerts.key }}
            {{- end }}
            {{- with $v.extraEnv }}
            # extraEnv: the operator's own, after the chart's.
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            {{- if or (eq $role "registration") (eq $role "console") }}
            - name: http
              containerPort: {{ $v.port }}
              protocol: TCP
            {{- end }}
            - name: metrics
              containerPort: {{ $root.Values.ops.port }}
              protocol: TCP
          startupProbe:
            httpGet:
              path: /healthz
              port: metrics
            {{- toYaml $v.probes.startup | nindent 12 }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: metrics
            {{- toYaml $v.probes.liveness | nindent 12 }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: metrics
            {{- toYaml $v.probes.readiness | nindent 12 }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- include "meterline.containerSecurityContext" $root | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if eq $role "processor" }}
            - name: dedupe-spill
              mountPath: /var/lib/meterline/dedupe
            {{- end }}
            - name: files
              mountPath: /etc/meterline
              readOnly: true
            {{- if $root.Values.extraCaCerts.existingSecret }}
            - name: ca
              mountPath: /etc/meterline-ca
              readOnly: true
            {{- end }}
            {{- if $root.Values.redis.tls.caSecret.name }}
            - name: redis-ca
              mountPath: /etc/meterline-redis-ca
              readOnly: true
            {{- end }}
            {{- if $kafka }}
            {{- with include "meterline.kafkaCaMount" $root | trim }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- end }}
            {{- with $v.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        # The root filesystem is read-only; /tmp is the only writable place.
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- if eq $role "processor" }}
        - name: dedupe-spill
          emptyDir:
            sizeLimit: {{ $v.dedupe.spillSizeLimit }}
        {{- end }}
        - name: files
          configMap:
            name: {{ include "meterline.fullname" $root }}-files
        {{- with $root.Values.extraCaCerts.existingSecret }}
        - name: ca
          secret:
            secretName: {{ . }}
            items:
              - key: {{ $root.Values.extraCaCerts.key }}
                path: {{ $root.Values.extraCaCerts.key }}
        {{- end }}
        {{- with $root.Values.redis.tls.caSecret }}
        {{- if .name }}
        - name: redis-ca
          secret:
            secretName: {{ .name }}
            items:
              - key: {{ .key }}
                path: {{ .key }}
        {{- end }}
        {{- end }}
        {{- if $kafka }}
        {{- with include "meterline.kafkaCaVolume" $root | trim }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- end }}
        {{- with $v.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}
