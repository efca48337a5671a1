{{/* The release-qualified chart name (the ServiceAccount's default name). */}}
{{- define "swappo-services.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The broker credentials Secret: the operator's <name>-rabbitmq unless overridden. */}}
{{- define "swappo-services.brokerSecret" -}}
{{- default (printf "%s-rabbitmq" .Values.messaging.name) .Values.messaging.secretName }}
{{- end }}

{{- define "swappo-services.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "swappo-services.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels of one service's objects: call with (dict "root" $ "name" ... "component" ...). */}}
{{- define "swappo-services.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "swappo-services.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: swappo
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{- define "swappo-services.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{/*
The broker connection from the operator's Secret, through secretKeyRef: the values never
appear in the manifest. Both services read RABBITMQ_HOST/PORT/USER/PASSWORD/VHOST.
*/}}
{{- define "swappo-services.brokerEnv" -}}
{{- $secret := include "swappo-services.brokerSecret" . -}}
- name: RABBITMQ_HOST
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: host}
- name: RABBITMQ_PORT
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: port}
- name: RABBITMQ_USER
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: username}
- name: RABBITMQ_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: password}
- name: RABBITMQ_VHOST
  value: {{ .Values.messaging.vhost | quote }}
{{- end }}

{{/*
One service's Deployment and Service: call with
(dict "root" $ "svc" .Values.<service> "component" ... "env" <rendered EnvVar list>).
*/}}
{{- define "swappo-services.workload" -}}
{{- $svc := .svc }}
{{- $ctx := dict "root" .root "name" $svc.name "component" .component }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $svc.name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "swappo-services.labels" $ctx | nindent 4 }}
spec:
  {{- if not .scaledElsewhere }}
  replicas: {{ $svc.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 3
  selector:
    matchLabels:
      {{- include "swappo-services.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "swappo-services.labels" $ctx | nindent 8 }}
      {{- with $svc.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "swappo-services.serviceAccountName" .root }}
      # The services never call the Kubernetes API: no token in the pod.
      automountServiceAccountToken: false
      {{- with .root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      # Pod Security Standard "restricted": non-root (65532 is the distroless `nonroot` user),
      # the runtime's default seccomp profile.
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile:
          type: RuntimeDefault
      # SIGTERM: stop consuming / serving, finish the batch in hand, close (well within 30 s).
      terminationGracePeriodSeconds: 30
      containers:
        - name: {{ .component }}
          image: {{ printf "%s:%s" $svc.image.repository ($svc.image.tag | default .root.Chart.AppVersion) | quote }}
          imagePullPolicy: {{ $svc.image.pullPolicy }}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          ports:
            - name: http
              containerPort: {{ $svc.port }}
              protocol: TCP
          env:
            - name: DATABASE_URL
              valueFrom:
                secretKeyRef:
                  name: {{ $svc.database.secretName }}
                  key: {{ $svc.database.key }}
            {{- include "swappo-services.brokerEnv" .root | nindent 12 }}
            - name: LOG_FORMAT
              value: {{ $svc.logFormat | quote }}
            {{- .env | nindent 12 }}
            {{- range $name, $value := $svc.env }}
            - name: {{ $name }}
              value: {{ $value | quote }}
            {{- end }}
          # /health: the process serves (never checks dependencies, so an outage of the broker
          # or database does not restart every pod). /ready: the database answers and, for the
          # consumer, the broker connection is up. Timeouts of 5 s rather than the default 1 s:
          # a busy node can delay an answer past a second.
          livenessProbe:
            httpGet:
              path: /health
              port: http
            initialDelaySeconds: 5
            periodSeconds: 10
            timeoutSeconds: 5
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /ready
              port: http
            periodSeconds: 5
            timeoutSeconds: 5
            failureThreshold: 3
          resources:
            {{- toYaml $svc.resources | nindent 12 }}
      {{- with $svc.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $svc.name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "swappo-services.labels" $ctx | nindent 4 }}
  annotations:
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ $svc.port | quote }}
    prometheus.io/path: /metrics
spec:
  type: ClusterIP
  selector:
    {{- include "swappo-services.selectorLabels" $ctx | nindent 4 }}
  ports:
    - name: http
      port: {{ $svc.service.port }}
      targetPort: http
      protocol: TCP
{{- end }}
