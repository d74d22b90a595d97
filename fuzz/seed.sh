#!/usr/bin/env bash
# Writes a few valid inputs into fuzz/corpus/<target>/ so each fuzzer starts from real syntax.
# The corpora themselves are not committed (see .gitignore); this script is how to recreate
# their seeds. Usage: fuzz/seed.sh   (idempotent)
set -euo pipefail
cd "$(dirname "$0")"

seed() { # target name content (printf format, no arguments)
    mkdir -p "corpus/$1"
    printf "$3" > "corpus/$1/seed-$2"
}

seed request_head connect 'CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n'
seed request_head get 'GET http://example.org/a?b=c HTTP/1.1\r\nHost: example.org\r\nUser-Agent: x\r\nAccept: */*\r\n\r\n'
seed request_head post 'POST http://h/ HTTP/1.0\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nX-Empty:\r\n\r\n'
seed request_head v6 'CONNECT [::1]:443 HTTP/1.1\r\nProxy-Authorization: Basic YTpi\r\n\r\n'

seed connect_authority name 'example.org:443'
seed connect_authority v4 '127.0.0.1:8443'
seed connect_authority v6 '[2001:db8::1]:443'
seed connect_authority dot 'Example.ORG.:1'

seed absolute_uri path 'http://example.org/a/b?q=1'
seed absolute_uri port 'HTTP://127.0.0.1:8080'
seed absolute_uri v6 'http://[::1]:81/x'
seed absolute_uri query 'http://h?x'

seed chunked simple '\x035\r\nhello\r\n0\r\n\r\n'
seed chunked ext '\x101;ext=1\r\n \r\n10\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\nNEXT'
seed chunked trailers '\x020\r\nA: b\r\nC: d\r\n\r\n'

seed htpasswd all '# users\nbob:$2y$05$.5mEf2n/qWuio67tlC519u9NPLIfcsKCVURXYnl8Hw/GkchafSRtK\namy:$apr1$MsHVxMyB$6JwV36VuoPpYZGjFzjFSm1\nsam:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\nsue:{SSHA}gVK8WC9YyFT1gMsQHTGCgT3sSv5zYWx0\npat:{PLAIN}secret\r\n'

seed config minimal 'server {\n    listen 127.0.0.1:3128;\n    proxy_connect;\n    proxy_connect_allow 443 563;\n    location / {\n        proxy_pass http://$http_host$request_uri;\n    }\n}\n'
seed config full 'max_connections 100;\nhttp {\n  resolver 127.0.0.1:53 valid=30s ipv6=off;\n  server {\n    listen 127.0.0.1:0 backlog=16 reuseport;\n    listen [::1]:0;\n    proxy_connect;\n    proxy_connect_allow all;\n    proxy_connect_connect_timeout 10s;\n    proxy_connect_data_timeout 1m;\n    proxy_connect_response "HTTP/1.1 200 OK ${connect_host}\\r\\n\\r\\n";\n    allow 127.0.0.1; deny all;\n    destination_allow 127.0.0.0/8 ::1 *.example.org;\n    destination_deny 10.0.0.0/8;\n    auth_basic "realm";\n    large_client_header_buffers 4 8k;\n    keepalive_timeout 75s 60s;\n    location = /x { proxy_pass http://$http_host$request_uri; proxy_set_header X-F $proxy_add_x_forwarded_for; proxy_via off; }\n    # comment\n  }\n}\n'
if [ -f ../proxy.conf.example ]; then
    mkdir -p corpus/config
    grep -v auth_basic_user_file ../proxy.conf.example > corpus/config/seed-example || true
fi
echo "seeds written under $(pwd)/corpus"
