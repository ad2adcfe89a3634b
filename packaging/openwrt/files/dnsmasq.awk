# dnsmasq.awk: the edits behind dnsveil-dnsmasq (which documents the
# interface), made on the text of /etc/config/dhcp. busybox awk compatible.
#
#   awk -v mode=apply -v server=127.0.0.1#5053 -v instances="* | NAME @dnsmasq[N] ..."
#   awk -v mode=restore
#
# apply, in each selected `config dnsmasq` section: every `list server` that
# is not domain-specific (a value not starting with "/") becomes `list
# dnsveil_server`, `option noresolv` becomes `option dnsveil_noresolv` (the
# keyword is renamed in place, so the line keeps its position, its value and
# its quoting), and three lines go after the section's last line:
#   option dnsveil_applied 'SERVER'   (what we added, for restore)
#   list server 'SERVER'
#   option noresolv '1'
# restore undoes exactly that in every section that has dnsveil_applied:
# the three lines go, the renamed keywords get their names back. A file that
# went through apply and restore is byte-identical to the original. Input
# to apply must already be restored (dnsveil-dnsmasq does both in turn).

function unquote(v) {
	if (v ~ /^'.*'$/ || v ~ /^".*"$/) return substr(v, 2, length(v) - 2)
	return v
}

# kind (option/list), name, value of an option line; 0 when it is none
function parse(line,    rest) {
	if (!match(line, /^[ \t]*(option|list)[ \t]+/)) return 0
	pre_len = RLENGTH
	rest = substr(line, RLENGTH + 1)
	p_kind = line ~ /^[ \t]*option/ ? "option" : "list"
	if (!match(rest, /^[A-Za-z0-9_]+/)) return 0
	p_name = substr(rest, 1, RLENGTH)
	rest = substr(rest, RLENGTH + 1)
	sub(/^[ \t]+/, "", rest)
	sub(/[ \t]+$/, "", rest)
	p_value = unquote(rest)
	return 1
}

function rename(line, newname) {
	return substr(line, 1, pre_len) newname substr(line, pre_len + 1 + length(p_name))
}

function selected(idx, name,    n, i, w) {
	n = split(instances, w, /[ \t]+/)
	for (i = 1; i <= n; i++)
		if (w[i] == "*" || (name != "" && w[i] == name) || w[i] == "@dnsmasq[" idx "]")
			return 1
	return 0
}

function flush(    i, last, applied, dropped_server, out) {
	if (nbuf == 0) return
	if (!is_dnsmasq) {
		for (i = 1; i <= nbuf; i++) print buf[i]
		nbuf = 0
		return
	}
	if (mode == "restore") {
		applied = ""
		for (i = 1; i <= nbuf; i++)
			if (parse(buf[i]) && p_kind == "option" && p_name == "dnsveil_applied") applied = p_value
		dropped_server = 0
		for (i = 1; i <= nbuf; i++) {
			out = buf[i]
			if (applied != "" && parse(out)) {
				if (p_name == "dnsveil_applied") continue
				if (p_kind == "list" && p_name == "server" && p_value == applied && !dropped_server) {
					dropped_server = 1
					continue
				}
				if (p_kind == "option" && p_name == "noresolv") continue
				if (p_kind == "list" && p_name == "dnsveil_server") out = rename(out, "server")
				if (p_kind == "option" && p_name == "dnsveil_noresolv") out = rename(out, "noresolv")
			}
			print out
		}
	} else if (selected(dnsmasq_idx, sec_name)) {
		last = 1
		for (i = 1; i <= nbuf; i++) if (buf[i] !~ /^[ \t]*$/) last = i
		for (i = 1; i <= nbuf; i++) {
			out = buf[i]
			if (parse(out)) {
				if (p_kind == "list" && p_name == "server" && p_value !~ /^\//)
					out = rename(out, "dnsveil_server")
				else if (p_kind == "option" && p_name == "noresolv")
					out = rename(out, "dnsveil_noresolv")
			}
			print out
			if (i == last) {
				printf "\toption dnsveil_applied '%s'\n", server
				printf "\tlist server '%s'\n", server
				printf "\toption noresolv '1'\n"
			}
		}
	} else {
		for (i = 1; i <= nbuf; i++) print buf[i]
	}
	nbuf = 0
}

BEGIN {
	if (mode != "apply" && mode != "restore") { print "dnsmasq.awk: mode must be apply or restore" > "/dev/stderr"; exit 2 }
	if (mode == "apply" && server !~ /^[0-9A-Fa-f.:]+#[0-9]+$/) { print "dnsmasq.awk: bad server '" server "'" > "/dev/stderr"; exit 2 }
	dnsmasq_count = 0
}

/^[ \t]*config[ \t]/ || /^[ \t]*package[ \t]/ {
	flush()
	is_dnsmasq = 0
	sec_name = ""
	if ($1 == "config" && $2 == "dnsmasq") {
		is_dnsmasq = 1
		dnsmasq_idx = dnsmasq_count++
		if (NF >= 3) sec_name = unquote($3)
	}
}

{ buf[++nbuf] = $0 }

END { flush() }
