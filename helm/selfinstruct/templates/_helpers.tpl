{{- define "selfinstruct.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "selfinstruct.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "selfinstruct.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The LLM_PROFILES JSON: every profile, its key read from an env var named after it. */}}
{{- define "selfinstruct.profiles" -}}
{{- $out := dict -}}
{{- range $name, $p := .Values.llm.profiles -}}
{{- if $p -}}
{{- $profile := dict "base_url" $p.baseUrl "model" $p.model "concurrency" ($p.concurrency | default 2) "timeout" ($p.timeout | default 120) "max_attempts" ($p.maxAttempts | default 6) "supports_n" ($p.supportsN | default false) -}}
{{- $_ := set $profile "api" ($p.api | default "completions") -}}
{{- if $p.responseFormat -}}
{{- $_ := set $profile "response_format" $p.responseFormat -}}
{{- end -}}
{{- if $p.maxTokensParam -}}
{{- $_ := set $profile "max_tokens_param" $p.maxTokensParam -}}
{{- end -}}
{{- if hasKey $p "sendSeed" -}}
{{- $_ := set $profile "send_seed" $p.sendSeed -}}
{{- end -}}
{{- if $p.reasoning -}}
{{- $_ := set $profile "reasoning" true -}}
{{- end -}}
{{- if $p.pricePerMillionTokens -}}
{{- $_ := set $profile "price_per_million_tokens" (dict "prompt" $p.pricePerMillionTokens.prompt "completion" $p.pricePerMillionTokens.completion) -}}
{{- $_ := set $profile "currency" ($p.currency | default "USD") -}}
{{- end -}}
{{- if $p.mode -}}
{{- $_ := set $profile "mode" $p.mode -}}
{{- end -}}
{{- if $p.batchPricePerMillionTokens -}}
{{- $_ := set $profile "batch_price_per_million_tokens" (dict "prompt" $p.batchPricePerMillionTokens.prompt "completion" $p.batchPricePerMillionTokens.completion) -}}
{{- end -}}
{{- range $key, $option := dict "maxInFlight" "max_in_flight" "requestsPerMinute" "requests_per_minute" "tokensPerMinute" "tokens_per_minute" -}}
{{- if hasKey $p $key -}}
{{- $_ := set $profile $option (get $p $key) -}}
{{- end -}}
{{- end -}}
{{- with $p.embeddings -}}
{{- $embeddings := dict "base_url" .baseUrl "model" .model -}}
{{- if hasKey . "pricePerMillionTokens" -}}
{{- $_ := set $embeddings "price_per_million_tokens" .pricePerMillionTokens -}}
{{- end -}}
{{- $_ := set $profile "embeddings" $embeddings -}}
{{- end -}}
{{- if $p.apiKeySecret -}}
{{- $_ := set $profile "api_key_env" (printf "LLM_KEY_%s" ($name | upper | replace "-" "_")) -}}
{{- end -}}
{{- $_ := set $out $name $profile -}}
{{- end -}}
{{- end -}}
{{- $out | toJson -}}
{{- end -}}

{{- define "selfinstruct.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "selfinstruct.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Environment shared by the API and the workers. */}}
{{- define "selfinstruct.env" -}}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
{{- if .Values.redis.internal.enabled }}
      name: {{ include "selfinstruct.fullname" . }}-redis
{{- else }}
      name: {{ .Values.redis.existingSecret }}
{{- end }}
      key: url
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret }}
      key: access-key-id
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret }}
      key: secret-access-key
{{- end -}}


{{/* The worker's grace period: the configured one, or longer if a profile's request timeout needs it. */}}
{{- define "selfinstruct.workerGrace" -}}
{{- $grace := int .Values.worker.terminationGracePeriodSeconds -}}
{{- range $name, $p := .Values.llm.profiles -}}
{{- if $p -}}
{{- $need := add (int ($p.timeout | default 120)) 60 -}}
{{- if gt (int $need) $grace -}}{{- $grace = int $need -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- $grace -}}
{{- end -}}
