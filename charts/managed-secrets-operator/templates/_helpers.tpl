{{/* Names, labels and the RBAC rule sets shared by the templates. */}}

{{- define "mso.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-managed-secrets-operator, or just <release> when the release name already contains the chart name. */}}
{{- define "mso.fullname" -}}
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

{{- define "mso.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mso.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mso.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mso.labels" -}}
helm.sh/chart: {{ include "mso.chart" . }}
{{ include "mso.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: managed-secrets-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "mso.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mso.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mso.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "mso.keyringFile" -}}
{{- with .Values.keyring.file }}
{{- default (printf "%s/%s" (trimSuffix "/" .mountPath) .key) .path }}
{{- end }}
{{- end }}

{{/* "true" when a key service seals the keyring (kms.provider pkcs11 or kmsv2), else empty. */}}
{{- define "mso.kms.enabled" -}}
{{- if has .Values.kms.provider (list "pkcs11" "kmsv2") }}true{{ end }}
{{- end }}

{{/* Where the PKCS#11 PIN Secret is mounted, and the PIN file in it (MSO_PKCS11_PIN_FILE). */}}
{{- define "mso.kms.pinDir" -}}
/etc/managed-secrets/pkcs11
{{- end }}

{{- define "mso.kms.pinFile" -}}
{{- include "mso.kms.pinDir" . }}/pin
{{- end }}

{{/* The directory of the KMS v2 plugin's socket (kms.kmsv2.endpoint without unix://): where its volume is mounted. */}}
{{- define "mso.kms.socketDir" -}}
{{- dir (trimPrefix "unix://" .Values.kms.kmsv2.endpoint) }}
{{- end }}

{{/*
RBAC rule sets. deploy/rbac.yaml holds the same rules for the kustomize base, and
tests/integration/test_chart.py checks that the two agree; change both together.

"mso.rules.served": what the operator does in every namespace it serves (all of them by default).
*/}}
{{- define "mso.rules.served" -}}
# ManagedSecrets: the operator lists and watches them (its shards, by the managedsecrets.io/shard label) and
# patches its finalizer and shard label.
- apiGroups: ["managedsecrets.io"]
  resources: ["managedsecrets"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["managedsecrets.io"]
  resources: ["managedsecrets/status"]
  verbs: ["patch"]
# Projected Secrets (watched for drift), valueFrom sources, and the keyring and version stores.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "update", "delete"]
# Events about ManagedSecrets (created, projected, rotated, failures).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Rolling restarts of spec.restartTargets when the projected version changes.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "patch"]
{{- end }}

{{/* Kopf watches CRDs so that a CRD installed or upgraded after start is noticed (without it, Kopf retries
with 403s for about a minute, then logs a warning and never notices CRD changes until restarted). */}}
{{- define "mso.rules.crds" -}}
# Kopf watches CRDs to notice ones installed or upgraded after it started.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
# At start-up the operator checks that the admission policy is bound, and warns if it is not.
- apiGroups: ["admissionregistration.k8s.io"]
  resources: ["validatingadmissionpolicybindings"]
  verbs: ["get"]
{{- end }}

{{/* Namespaced mode only: Kopf lists and watches namespaces to match its namespace list. Without it Kopf
retries with 403s for about a minute before it falls back to the exact names, and serves nothing until then. */}}
{{- define "mso.rules.namespaces" -}}
# Kopf lists and watches namespaces to match its list of served namespaces.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}

{{/* Namespaced mode only, in the release namespace: the keyring Secret and one store Secret per ManagedSecret.
The operator reads and writes them directly; it does not watch them. */}}
{{- define "mso.rules.store" -}}
# The keyring Secret and the version stores (one Secret per ManagedSecret); read, written, and watched (by
# label and by name) for their revisions and for key rotation requests.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "update", "delete"]
{{- end }}

{{/* Both modes, in the release namespace: one Lease per replica (managed-secrets-member-<pod name>), naming the
shards it holds. Each replica creates, renews and deletes its own; the leader deletes those of replicas gone for
long. */}}
{{- define "mso.rules.leases" -}}
# Member Leases: read (all of them, to share the shards), created, renewed and deleted.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "list", "create", "update", "delete"]
{{- end }}
