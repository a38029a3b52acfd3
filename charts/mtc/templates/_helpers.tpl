{{/* Names and labels shared by every template. Selector labels never change between releases. */}}

{{/* Base name of every object: the release name when it already says "mtc", else release-mtc. */}}
{{- define "mtc.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Selector labels of one workload. Call with (dict "ctx" $ "name" NAME). */}}
{{- define "mtc.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- end -}}

{{/* Every label of one object. Call with (dict "ctx" $ "name" NAME "component" COMPONENT). */}}
{{- define "mtc.labels" -}}
{{- if .name -}}
{{ include "mtc.selectorLabels" . }}
{{- else -}}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- end }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: mtc
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version }}
{{- end -}}

{{/* Labels of a pod template: selector labels plus component, nothing that changes per release. */}}
{{- define "mtc.podLabels" -}}
{{ include "mtc.selectorLabels" . }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: mtc
{{- end -}}

{{/* Pod annotations for the Istio sidecar (see components/istio/sidecar-annotations.yaml). */}}
{{- define "mtc.istioPodAnnotations" -}}
{{- if .Values.istio.enabled }}
annotations:
  proxy.istio.io/config: |
    terminationDrainDuration: {{ .Values.istio.terminationDrainDuration }}
  traffic.sidecar.istio.io/excludeOutboundPorts: {{ .Values.istio.excludeOutboundPorts | quote }}
{{- end }}
{{- end -}}

{{/* Pod-level security context shared by the mtc images (user 10001). */}}
{{- define "mtc.podSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* Container security context: read-only root, no capabilities, no privilege escalation. */}}
{{- define "mtc.containerSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
{{- end -}}

{{/* S3 settings and credentials, all optional (without them boto3 uses the pod's IAM role). */}}
{{- define "mtc.s3Env" -}}
- name: MTC_S3_ENDPOINT_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret }}
      key: endpoint-url
      optional: true
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret }}
      key: access-key-id
      optional: true
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret }}
      key: secret-access-key
      optional: true
- name: AWS_DEFAULT_REGION
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret }}
      key: region
      optional: true
{{- end -}}

{{/* Image reference; the tag defaults to the chart's appVersion. */}}
{{- define "mtc.image" -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .ctx.Chart.AppVersion) -}}
{{- end -}}

{{/* Name of the Redis password Secret. */}}
{{- define "mtc.redisSecret" -}}
{{- .Values.redis.existingSecret | default (printf "%s-redis" (include "mtc.fullname" .)) -}}
{{- end -}}

{{/* Name of the jobs Redis password Secret. */}}
{{- define "mtc.jobsRedisSecret" -}}
{{- .Values.jobsRedis.existingSecret | default (printf "%s-jobs-redis" (include "mtc.fullname" .)) -}}
{{- end -}}

{{/* Password, broker URL and job-store URL of the jobs Redis (gateway and workers). */}}
{{- define "mtc.jobsEnv" -}}
- name: JOBS_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "mtc.jobsRedisSecret" . }}
      key: password
- name: MTC_JOBS_BROKER_URL
  value: redis://:$(JOBS_REDIS_PASSWORD)@{{ include "mtc.fullname" . }}-jobs-redis:6379/0
- name: MTC_JOBS_REDIS_URL
  value: redis://:$(JOBS_REDIS_PASSWORD)@{{ include "mtc.fullname" . }}-jobs-redis:6379/1
{{- end -}}
