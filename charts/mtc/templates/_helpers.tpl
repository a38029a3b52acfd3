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

{{/* Labels of a pod template: selector labels plus component, nothing that changes per release.
With Istio, the pod asks for its sidecar itself: the chart does not own the namespace, so it
cannot rely on the namespace's istio-injection label. */}}
{{- define "mtc.podLabels" -}}
{{ include "mtc.selectorLabels" . }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: mtc
{{- if .ctx.Values.istio.enabled }}
sidecar.istio.io/inject: "true"
{{- end }}
{{- end -}}

{{/* Pod template annotations, later ones winning: the Istio sidecar's settings (`istio`, a
dict, used when istio.enabled), the global podAnnotations, the workload's podAnnotations,
and checksum/config, a hash of the settings the pod reads, so a changed setting rolls the pods
(as kustomize's hashed ConfigMap names do). Call with
(dict "ctx" $ "workload" VALUES "istio" DICT "checksum" SHA256). */}}
{{- define "mtc.podAnnotations" -}}
{{- $annotations := dict -}}
{{- if .ctx.Values.istio.enabled -}}
{{- $annotations = mergeOverwrite $annotations (.istio | default dict) -}}
{{- end -}}
{{- $annotations = mergeOverwrite $annotations (.ctx.Values.podAnnotations | default dict) -}}
{{- $annotations = mergeOverwrite $annotations ((.workload | default dict).podAnnotations | default dict) -}}
{{- with .checksum -}}
{{- $_ := set $annotations "checksum/config" . -}}
{{- end -}}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Where a pod runs and how its images are pulled: imagePullSecrets (global), then
priorityClassName, nodeSelector, tolerations and affinity, each the workload's own value when
set, else the global one. Call with (dict "ctx" $ "workload" VALUES). */}}
{{- define "mtc.podScheduling" -}}
{{- $global := .ctx.Values -}}
{{- $workload := .workload | default dict -}}
{{- with $global.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with ($workload.priorityClassName | default $global.priorityClassName) }}
priorityClassName: {{ . }}
{{- end }}
{{- with ($workload.nodeSelector | default $global.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with ($workload.tolerations | default $global.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with ($workload.affinity | default $global.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Seconds a task's service may take for one request (its MTC_REQUEST_TIMEOUT_SECONDS, else
the gateway's default), as the gateway's MTC_GATEWAY_TASK_TIMEOUTS says. Call with
(dict "ctx" $ "model" MODEL). */}}
{{- define "mtc.taskTimeout" -}}
{{- .model.config.MTC_REQUEST_TIMEOUT_SECONDS | default .ctx.Values.gateway.config.MTC_GATEWAY_REQUEST_TIMEOUT_SECONDS | default "30" | float64 -}}
{{- end -}}

{{/* How much longer than a task's timeout the gateway waits for its service
(MTC_GATEWAY_UPSTREAM_TIMEOUT_MARGIN_SECONDS, default 5 in gateway/settings.py). */}}
{{- define "mtc.upstreamMargin" -}}
{{- .Values.gateway.config.MTC_GATEWAY_UPSTREAM_TIMEOUT_MARGIN_SECONDS | default "5" | float64 -}}
{{- end -}}

{{/* Data of the ConfigMap every model service shares. */}}
{{- define "mtc.sharedConfigData" -}}
{{- range $setting, $value := .Values.config }}
{{ $setting }}: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* Data of one model's ConfigMap. Call with (dict "model" MODEL). */}}
{{- define "mtc.modelConfigData" -}}
MTC_TASK: {{ .model.task | quote }}
# Where the initContainer fetches the model from; the server reads the local copy.
MTC_MODEL_URI: {{ .model.modelUri | quote }}
{{- range $setting, $value := .model.config }}
{{ $setting }}: {{ $value | quote }}
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

{{/* Image reference; the tag defaults to the chart's appVersion. A digest (image.digest:
sha256:...) pins the image and replaces the tag, as kustomize's `images: digest` does. */}}
{{- define "mtc.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .ctx.Chart.AppVersion) -}}
{{- end -}}
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
