{{/* Chart name. */}}
{{- define "herald.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name. */}}
{{- define "herald.fullname" -}}
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

{{- define "herald.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "herald.selectorLabels" -}}
app.kubernetes.io/name: {{ include "herald.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "herald.labels" -}}
helm.sh/chart: {{ include "herald.chart" . }}
{{ include "herald.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "herald.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "herald.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding herald's secrets. */}}
{{- define "herald.secretName" -}}
{{- default (include "herald.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* Where the config volume is mounted; the image's CMD reads herald.toml here. */}}
{{- define "herald.configDir" -}}/etc/herald{{- end }}

{{/*
Seconds in a humantime duration restricted to the schema's form ("30s", "1m30s",
"500ms", "1h"), rounded up.
*/}}
{{- define "herald.durationSeconds" -}}
{{- $ms := 0 }}
{{- range $part := regexFindAll "[0-9]+(ms|h|m|s)" . -1 }}
{{- $n := regexFind "^[0-9]+" $part | atoi }}
{{- $unit := regexReplaceAll "^[0-9]+" $part "" }}
{{- if eq $unit "ms" }}{{ $ms = add $ms $n }}
{{- else if eq $unit "s" }}{{ $ms = add $ms (mul $n 1000) }}
{{- else if eq $unit "m" }}{{ $ms = add $ms (mul $n 60000) }}
{{- else if eq $unit "h" }}{{ $ms = add $ms (mul $n 3600000) }}
{{- end }}
{{- end }}
{{- div (add $ms 999) 1000 }}
{{- end }}

{{/* terminationGracePeriodSeconds: computed from shutdown.timeout, or checked against it. */}}
{{- define "herald.terminationGracePeriodSeconds" -}}
{{- $timeout := include "herald.durationSeconds" .Values.config.shutdown.timeout | atoi }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $timeout .Values.terminationGraceExtraSeconds }}
{{- else }}
{{- $grace := .Values.terminationGracePeriodSeconds | int }}
{{- if le $grace $timeout }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be above config.shutdown.timeout (%s = %ds)" $grace .Values.config.shutdown.timeout $timeout) }}
{{- end }}
{{- $grace }}
{{- end }}
{{- end }}

{{/*
Secret files: a list of {entry, path, configKey} for every secret herald reads, in
the Secret of herald.secretName. configKey is a dotted path of a *_file key, or ""
for keyring entries (those are named in bus_integrity.keys / history_encryption.keys).
Rendered as JSON; use with fromJson.
*/}}
{{- define "herald.secretFiles" -}}
{{- $s := .Values.secrets }}
{{- $e := $s.existingSecretEntries }}
{{- $ext := ne $s.existingSecret "" }}
{{- $dir := printf "%s/secrets" (include "herald.configDir" .) }}
{{- $files := list }}
{{- if or (and $ext $e.hmacSecretKey) (and (not $ext) (or $s.hmacSecretKey $s.generate)) }}
{{- $files = append $files (dict "entry" "hmac_secret_key" "path" (printf "%s/hmac_secret_key" $dir) "configKey" "client.token.hmac_secret_key_file") }}
{{- end }}
{{- if or (and $ext $e.hmacPreviousSecretKey) (and (not $ext) $s.hmacPreviousSecretKey) }}
{{- $files = append $files (dict "entry" "hmac_previous_secret_key" "path" (printf "%s/hmac_previous_secret_key" $dir) "configKey" "client.token.hmac_previous_secret_key_file") }}
{{- end }}
{{- if or (and $ext $e.apiKey) (and (not $ext) (or $s.apiKey $s.generate)) }}
{{- $files = append $files (dict "entry" "api_key" "path" (printf "%s/api_key" $dir) "configKey" "http_api.key_file") }}
{{- end }}
{{- if or (and $ext $e.redisPassword) (and (not $ext) $s.redisPassword) }}
{{- $files = append $files (dict "entry" "redis_password" "path" (printf "%s/redis_password" $dir) "configKey" "engine.redis.password_file") }}
{{- end }}
{{- if or (and $ext $e.introspectionClientSecret) (and (not $ext) $s.introspectionClientSecret) }}
{{- $files = append $files (dict "entry" "introspection_client_secret" "path" (printf "%s/introspection_client_secret" $dir) "configKey" "client.introspection.client_secret_file") }}
{{- end }}
{{- if or (and $ext $e.adminPasswordHash) (and (not $ext) $s.adminPasswordHash) }}
{{- $files = append $files (dict "entry" "admin_password" "path" (printf "%s/admin_password" $dir) "configKey" "admin.password_file") }}
{{- end }}
{{- if or (and $ext $e.adminSecret) (and (not $ext) $s.adminSecret) }}
{{- $files = append $files (dict "entry" "admin_secret" "path" (printf "%s/admin_secret" $dir) "configKey" "admin.secret_file") }}
{{- end }}
{{- $bus := ternary $e.busKeys (keys $s.busKeys | sortAlpha) $ext }}
{{- range $id := $bus }}
{{- $files = append $files (dict "entry" (printf "bus_key.%s" $id) "path" (printf "%s/bus-keys/%s" (include "herald.configDir" $) $id) "configKey" "" "busKey" $id) }}
{{- end }}
{{- $hist := ternary $e.historyKeys (keys $s.historyKeys | sortAlpha) $ext }}
{{- range $id := $hist }}
{{- $files = append $files (dict "entry" (printf "history_key.%s" $id) "path" (printf "%s/history-keys/%s" (include "herald.configDir" $) $id) "configKey" "" "historyKey" $id) }}
{{- end }}
{{- dict "files" $files | toJson }}
{{- end }}

{{/* The config tree: values.config plus what the chart owns (secret files, keyrings, TLS). */}}
{{- define "herald.configTree" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $files := (include "herald.secretFiles" . | fromJson).files }}
{{- $bus := list }}
{{- $hist := list }}
{{- range $f := $files }}
{{- if $f.configKey }}
{{- $parts := splitList "." $f.configKey }}
{{- $leaf := dict (last $parts) $f.path }}
{{- range $p := reverse (initial $parts) }}
{{- $leaf = dict $p $leaf }}
{{- end }}
{{- $cfg = mergeOverwrite $cfg $leaf }}
{{- else if $f.busKey }}
{{- $bus = append $bus (dict "id" $f.busKey "secret_file" $f.path) }}
{{- else if $f.historyKey }}
{{- $hist = append $hist (dict "id" $f.historyKey "key_file" $f.path) }}
{{- end }}
{{- end }}
{{- $_ := set $cfg.bus_integrity "keys" $bus }}
{{- $_ := set $cfg.history_encryption "keys" $hist }}
{{- $busActive := $cfg.bus_integrity.active | default "" }}
{{- if $busActive }}
{{- $ids := list }}{{ range $bus }}{{ $ids = append $ids .id }}{{ end }}
{{- if not (has $busActive $ids) }}
{{- fail (printf "config.bus_integrity.active %q names no bus key of secrets (have %v)" $busActive $ids) }}
{{- end }}
{{- end }}
{{- $histActive := $cfg.history_encryption.active | default "" }}
{{- if $histActive }}
{{- $ids := list }}{{ range $hist }}{{ $ids = append $ids .id }}{{ end }}
{{- if not (has $histActive $ids) }}
{{- fail (printf "config.history_encryption.active %q names no history key of secrets (have %v)" $histActive $ids) }}
{{- end }}
{{- end }}
{{- $tls := dict "enabled" .Values.tls.enabled }}
{{- if .Values.tls.enabled }}
{{- if not .Values.tls.secretName }}
{{- fail "tls.enabled needs tls.secretName (a kubernetes.io/tls Secret)" }}
{{- end }}
{{- $dir := printf "%s/tls" (include "herald.configDir" .) }}
{{- $_ := set $tls "cert_pem_file" (printf "%s/tls.crt" $dir) }}
{{- $_ := set $tls "key_pem_file" (printf "%s/tls.key" $dir) }}
{{- $_ := set $tls "client_auth" .Values.tls.clientAuth }}
{{- $_ := set $tls "min_version" .Values.tls.minVersion }}
{{- if ne .Values.tls.clientAuth "none" }}
{{- if not .Values.tls.clientCASecretName }}
{{- fail (printf "tls.clientAuth %q needs tls.clientCASecretName" .Values.tls.clientAuth) }}
{{- end }}
{{- $_ := set $tls "client_ca_pem_file" (printf "%s/client-ca/ca.crt" (include "herald.configDir" .)) }}
{{- end }}
{{- end }}
{{- $_ := set $cfg.http_server "tls" $tls }}
{{- toJson $cfg }}
{{- end }}

{{/* A TOML key: bare when it can be, else quoted. */}}
{{- define "herald.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/*
One TOML table: {path, table}. Scalars and arrays of scalars first, then sub-tables,
then arrays of tables. Nulls are left out (herald's default applies).
*/}}
{{- define "herald.toml.table" -}}
{{- $path := .path }}
{{- $t := .table }}
{{- $subtables := list }}
{{- $arrays := list }}
{{- if $path }}
[{{ $path }}]
{{- end }}
{{- range $k := keys $t | sortAlpha }}
{{- $v := get $t $k }}
{{- if kindIs "map" $v }}
{{- $subtables = append $subtables $k }}
{{- else if and (kindIs "slice" $v) (gt (len $v) 0) (kindIs "map" (first $v)) }}
{{- $arrays = append $arrays $k }}
{{- else if not (kindIs "invalid" $v) }}
{{ include "herald.toml.key" $k }} = {{ toJson $v }}
{{- end }}
{{- end }}
{{- range $k := $subtables }}

{{ include "herald.toml.table" (dict "path" (ternary (printf "%s.%s" $path (include "herald.toml.key" $k)) (include "herald.toml.key" $k) (ne $path "")) "table" (get $t $k)) }}
{{- end }}
{{- range $k := $arrays }}
{{- $full := ternary (printf "%s.%s" $path (include "herald.toml.key" $k)) (include "herald.toml.key" $k) (ne $path "") }}
{{- range $item := get $t $k }}

[[{{ $full }}]]
{{- range $ik := keys $item | sortAlpha }}
{{- $iv := get $item $ik }}
{{- if kindIs "map" $iv }}
{{- fail (printf "%s: nested tables inside an array of tables are not supported" $full) }}
{{- else if not (kindIs "invalid" $iv) }}
{{ include "herald.toml.key" $ik }} = {{ toJson $iv }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
