{{/* The chart's short name. */}}
{{- define "swappo-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release-qualified name of every object (63 characters at most: a DNS label). */}}
{{- define "swappo-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "swappo-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "swappo-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: swappo
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the operator's pods (never change them on upgrade). */}}
{{- define "swappo-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "swappo-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "swappo-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "swappo-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The one namespace watched in `watch.scope: namespace` (default: the release's). */}}
{{- define "swappo-operator.watchNamespace" -}}
{{- default .Release.Namespace .Values.watch.namespace }}
{{- end }}

{{/* The leader Lease's name: one per release, so two releases never share a leader. */}}
{{- define "swappo-operator.leaseName" -}}
{{- default (include "swappo-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The operator's image reference. */}}
{{- define "swappo-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
The permissions the reconciler needs in the namespaces it watches, each rule with the code
that uses it. Nothing here reaches beyond those namespaces: no Namespace, Node or CRD access.
*/}}
{{- define "swappo-operator.rules" -}}
# The controller's watch of SwappoMessaging (its cache also serves the autoscaler); `get` reads
# one fresh before counting cleaned ReplicaSets in its status, and after a status conflict.
- apiGroups: ["swappo.io"]
  resources: ["swappomessagings"]
  verbs: ["get", "list", "watch"]
# status, conditions and counters: server-side apply by the reconciler and the autoscaler
# (each its own field manager), a merge patch for the clean-up count.
- apiGroups: ["swappo.io"]
  resources: ["swappomessagings/status"]
  verbs: ["patch"]
# Owned objects carry owner references with blockOwnerDeletion; clusters that enable the
# OwnerReferencesPermissionEnforcement admission plugin require update on the owner's finalizers.
- apiGroups: ["swappo.io"]
  resources: ["swappomessagings/finalizers"]
  verbs: ["update"]
# The credentials Secret, the broker's ConfigMap and Service: read, watched (owned, by the
# managed-by label), and written by server-side apply (a patch; when the object is missing the
# API server checks `create` too). `get` also reads a user's spec.broker.credentialsSecret.
- apiGroups: [""]
  resources: ["secrets", "configmaps", "services"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The broker's data claim: created once, never patched (a claim's spec is immutable).
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create"]
# The broker StatefulSet (server-side apply, as above, watched and cached).
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The autoscaler reads consumer Deployments and the ReplicaSet clean-up reads them by name;
# `delete` only removes the broker Deployment of an operator version before the StatefulSet
# (labelled as the operator's, deleted before the StatefulSet starts on its volume).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "delete"]
# The autoscaler changes consumer replicas only through the scale subresource.
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["patch"]
# Other autoscalers of a consumer Deployment (watched, read only): a Deployment an HPA or a
# KEDA ScaledObject targets is refused with a condition, never scaled by the operator too.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list", "watch"]
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["list", "watch"]
# Stale ReplicaSet cleanup (DESIGN §7): watch ReplicaSets, delete only the stale ones.
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["list", "watch", "delete"]
# ... judging a rollout by its pods' readiness, and waiting for an earlier version's broker pods
# to be gone before the StatefulSet starts (read only).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# The broker's NetworkPolicy (server-side apply, watched and cached); deleted when
# spec.broker.networkPolicy.enabled is false.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Events on the SwappoMessaging (the recorder creates, then patches a series).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
