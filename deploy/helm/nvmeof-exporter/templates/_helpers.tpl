{{/* Names, labels and the image, shared by every template. */}}

{{- define "nvmeof-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release name alone when it already contains the chart's name. */}}
{{- define "nvmeof-exporter.fullname" -}}
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

{{- define "nvmeof-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nvmeof-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "nvmeof-exporter.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "nvmeof-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: metrics
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "nvmeof-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nvmeof-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository:tag@digest; the tag defaults to the chart's appVersion. */}}
{{- define "nvmeof-exporter.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
The container's securityContext: the values' capabilities-only context, or privileged for SMART
(values.yaml, smart). A privileged container gets every capability and no seccomp filter, and
the API refuses allowPrivilegeEscalation: false beside privileged: true, so those keys go.
*/}}
{{- define "nvmeof-exporter.securityContext" -}}
{{- if .Values.smart.enabled }}
{{- $sc := omit .Values.securityContext "privileged" "allowPrivilegeEscalation" "capabilities" "seccompProfile" }}
{{- toYaml (merge (dict "privileged" true) $sc) }}
{{- else }}
{{- toYaml .Values.securityContext }}
{{- end }}
{{- end }}

{{/* The probes' handler: see livenessProbe in values.yaml for why TCP with a web config. */}}
{{- define "nvmeof-exporter.probeHandler" -}}
{{- if .Values.webConfig.secretName }}
tcpSocket:
  port: {{ .Values.service.portName }}
{{- else }}
httpGet:
  path: /healthz
  port: {{ .Values.service.portName }}
{{- end }}
{{- end }}
