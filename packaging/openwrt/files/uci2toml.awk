# uci2toml.awk: the UCI -> TOML rendering behind dnsveil-uci2toml (which
# documents the interface). Input: `uci show dnsveil` lines. Output: the TOML
# on stdout, or problems on stderr and exit status 1. busybox awk compatible.

BEGIN { Q = sprintf("%c", 39); BS = sprintf("%c", 92) }

function err(where, msg) {
	printf "%s: %s\n", where, msg > "/dev/stderr"
	nerr++
}

# The values of a `uci show` right-hand side: one or more single-quoted
# strings separated by spaces; a quote inside a value is written as the
# shell does it: close, backslash-quote, reopen. Fills vals[1..n]; returns
# n, or -1 when the text is not in that form.
function parse_values(s,    n, i, c, cur, inq) {
	n = 0; cur = ""; inq = 0; i = 1
	while (i <= length(s)) {
		c = substr(s, i, 1)
		if (inq) {
			if (c == Q) { inq = 0; vals[++n] = cur; cur = "" }
			else cur = cur c
			i++
		} else if (c == Q) {
			inq = 1; i++
		} else if (c == BS && n > 0 && substr(s, i - 1, 1) == Q && substr(s, i, 3) == BS Q Q) {
			cur = vals[n] Q; n--; inq = 1; i += 3
		} else if (c == " ") {
			i++
		} else {
			return -1
		}
	}
	if (inq) return -1
	return n
}

# A TOML basic string; control characters are refused by the caller.
# (by hand: awks disagree on backslashes in gsub replacements)
function q(s,    i, c, r) {
	r = ""
	for (i = 1; i <= length(s); i++) {
		c = substr(s, i, 1)
		r = r (c == BS || c == "\"" ? BS : "") c
	}
	return "\"" r "\""
}

function has_ctl(s) { return s ~ /[\001-\037\177]/ }

function where(s, o) { return "dnsveil." s (o == "" ? "" : "." o) }

# One value of option o in section s: its text, with problems reported.
function one(s, o,    k) {
	k = s SUBSEP o
	if (!(k in cnt)) return ""
	if (cnt[k] != 1) { err(where(s, o), "takes one value, not a list"); return "" }
	return val[k, 1]
}

function is_bool(v) { return v ~ /^(0|1|yes|no|on|off|true|false|enabled|disabled)$/ }
function truth(v) { return v ~ /^(1|yes|on|true|enabled)$/ }

function uint(s, o,    v) {
	v = one(s, o)
	if (v != "" && v !~ /^[0-9]+$/) { err(where(s, o), "expects a number, not \"" v "\""); return "" }
	return v
}

# "[a, b]" from the values of list option o.
function toml_list(s, o,    k, i, r) {
	k = s SUBSEP o
	r = ""
	for (i = 1; i <= cnt[k]; i++) r = r (i > 1 ? ", " : "") q(val[k, i])
	return "[" r "]"
}

function known(type, o) {
	if (type == "dnsveil")
		return o ~ /^(enabled|listen_addr|listen_port|strategy|cache_size|timeout_ms|tls_time_check|dnsmasq_config_update|force_dns|canary_domain|log_level|control|trigger_interface)$/
	if (type == "upstream")
		return o ~ /^(url|bootstrap|tls_name|tls_ca|pin|method|connections|default)$/
	if (type == "group")
		return o ~ /^(upstream|strategy|hedge_after_ms)$/
	if (type == "rule")
		return o ~ /^(domain|qtype|client|group|upstream|action)$/
	return 0
}

# TOML key for a section: its UCI name, or TYPE_N for an anonymous one.
function sname(s,    m) {
	if (s ~ /^@[a-z_]+\[[0-9]+\]$/) {
		m = s
		sub(/^@/, "", m); sub(/\[/, "_", m); sub(/\]$/, "", m)
		return m
	}
	return s
}

{
	line = $0
	if (line == "") next
	eq = index(line, "=")
	if (eq == 0) { err("line " NR, "not uci show output: " line); next }
	lhs = substr(line, 1, eq - 1)
	rhs = substr(line, eq + 1)
	if (lhs !~ /^dnsveil\.(@[a-z_]+\[[0-9]+\]|[A-Za-z0-9_]+)(\.[A-Za-z0-9_]+)?$/) {
		err("line " NR, "not a dnsveil option: " lhs)
		next
	}
	sub(/^dnsveil\./, "", lhs)
	dot = index(lhs, ".")
	if (dot == 0) {
		if (rhs !~ /^[a-z_]+$/) { err(where(lhs, ""), "bad section type \"" rhs "\""); next }
		if (!(lhs in type)) { order[++nsec] = lhs }
		type[lhs] = rhs
		next
	}
	s = substr(lhs, 1, dot - 1)
	o = substr(lhs, dot + 1)
	if (!(s in type)) { err(where(s, o), "option before its section"); next }
	n = parse_values(rhs)
	if (n < 1) { err(where(s, o), "cannot read the value " rhs); next }
	k = s SUBSEP o
	cnt[k] = n
	for (i = 1; i <= n; i++) {
		if (has_ctl(vals[i])) { err(where(s, o), "control characters in the value"); cnt[k] = 0 }
		val[k, i] = vals[i]
	}
}

END {
	main = ""
	for (i = 1; i <= nsec; i++) {
		s = order[i]; t = type[s]
		if (t != "dnsveil" && t != "upstream" && t != "group" && t != "rule") {
			err(where(s, ""), "unknown section type \"" t "\" (dnsveil, upstream, group or rule)")
			continue
		}
		if (t == "dnsveil") {
			if (main != "") err(where(s, ""), "a second dnsveil section (the first is " main ")")
			else main = s
		}
		for (k in cnt) {
			split(k, kp, SUBSEP)
			if (kp[1] == s && !known(t, kp[2])) err(where(s, kp[2]), "unknown option for a " t " section")
		}
		if (t == "upstream" || t == "group") {
			nm = sname(s)
			if ((t, nm) in named) err(where(s, ""), "a second " t " named " nm)
			named[t, nm] = s
		}
	}

	# [server] [log] [cache]
	out = "# Generated from /etc/config/dnsveil by dnsveil-uci2toml; edit that file,\n"
	out = out "# not this one: it is rewritten on every start and reload.\n\n[server]\n"
	port = main == "" ? "" : uint(main, "listen_port")
	if (port == "") port = "5053"
	if (port + 0 < 1 || port + 0 > 65535) err(where(main, "listen_port"), "port " port " is out of range (1-65535)")
	k = main SUBSEP "listen_addr"
	listen = ""
	if (main != "" && (k in cnt)) {
		for (i = 1; i <= cnt[k]; i++) {
			a = val[k, i]
			if (a !~ /^[0-9A-Fa-f.:]+$/) { err(where(main, "listen_addr"), "\"" a "\" is not an IP address"); continue }
			listen = listen (listen == "" ? "" : ", ") q((a ~ /:/ ? "[" a "]" : a) ":" port)
		}
	} else {
		listen = q("127.0.0.1:" port)
	}
	out = out "listen = [" listen "]\n"
	if (main != "") {
		v = uint(main, "timeout_ms"); if (v != "") out = out "timeout_ms = " v "\n"
		v = one(main, "tls_time_check"); if (v != "") out = out "tls_time_check = " q(v) "\n"
		v = one(main, "control")
		out = out "control = " q(v != "" ? v : "/var/run/dnsveil.sock") "\n"
		for (b = 1; b <= 2; b++) {
			o = b == 1 ? "enabled" : "force_dns"
			v = one(main, o)
			if (v != "" && !is_bool(v)) err(where(main, o), "expects 0 or 1, not \"" v "\"")
		}
		v = one(main, "log_level"); if (v != "") out = out "\n[log]\nlevel = " q(v) "\n"
		v = one(main, "cache_size"); if (v != "") out = out "\n[cache]\nsize = " q(v) "\n"
	} else {
		out = out "control = " q("/var/run/dnsveil.sock") "\n"
	}

	# upstreams, and which of them serve the default group
	ndef = 0
	for (i = 1; i <= nsec; i++) {
		s = order[i]
		if (type[s] != "upstream") continue
		nm = sname(s)
		url = one(s, "url")
		if (url == "") { err(where(s, "url"), "missing: every upstream needs a url"); continue }
		out = out "\n[upstreams." nm "]\nurl = " q(url) "\n"
		if ((s SUBSEP "bootstrap") in cnt) out = out "bootstrap = " toml_list(s, "bootstrap") "\n"
		v = one(s, "tls_name"); if (v != "") out = out "tls_name = " q(v) "\n"
		v = one(s, "tls_ca"); if (v != "") out = out "tls_ca = " q(v) "\n"
		if ((s SUBSEP "pin") in cnt) out = out "pins = " toml_list(s, "pin") "\n"
		v = one(s, "method"); if (v != "") out = out "method = " q(v) "\n"
		v = uint(s, "connections"); if (v != "") out = out "connections = " v "\n"
		plain = url ~ /^(udp|tcp):\/\//
		v = one(s, "default")
		if (v != "" && !is_bool(v)) { err(where(s, "default"), "expects 0 or 1, not \"" v "\""); continue }
		if (v != "" && truth(v) && plain) {
			err(where(s, "default"), "plain DNS (" url ") only serves rules, never the default group")
			continue
		}
		if (v == "" ? !plain : truth(v)) defs[++ndef] = nm
	}

	# groups: the user's, then the implicit default, then one per rule upstream
	have_default = 0
	for (i = 1; i <= nsec; i++) {
		s = order[i]
		if (type[s] != "group") continue
		nm = sname(s)
		if (nm == "default") have_default = 1
		k = s SUBSEP "upstream"
		if (!(k in cnt)) { err(where(s, "upstream"), "missing: a group needs upstreams"); continue }
		for (j = 1; j <= cnt[k]; j++)
			if (!(("upstream", val[k, j]) in named)) err(where(s, "upstream"), "no upstream named " val[k, j])
		out = out "\n[groups." nm "]\nupstreams = " toml_list(s, "upstream") "\n"
		v = one(s, "strategy"); if (v != "") out = out "strategy = " q(v) "\n"
		v = uint(s, "hedge_after_ms"); if (v != "") out = out "hedge_after_ms = " v "\n"
	}
	if (!have_default) {
		if (ndef == 0) {
			err(main == "" ? "dnsveil" : where(main, ""), "no encrypted upstream for the default group (add a config upstream with an https://, tls:// or quic:// url)")
		} else {
			r = ""
			for (j = 1; j <= ndef; j++) r = r (j > 1 ? ", " : "") q(defs[j])
			out = out "\n[groups.default]\nupstreams = [" r "]\n"
			v = main == "" ? "" : one(main, "strategy")
			out = out "strategy = " q(v != "" ? v : "fastest") "\n"
		}
	}

	# rules: the canary domains first, then the configured ones in order
	rules = ""
	# (an empty value, canary_domain '', turns them off)
	k = main SUBSEP "canary_domain"
	r = ""
	for (i = 1; main != "" && i <= cnt[k]; i++)
		if (val[k, i] != "") r = r (r == "" ? "" : ", ") q(val[k, i])
	if (r != "") rules = rules "\n[[rules]]\ndomains = [" r "]\naction = \"nxdomain\"\n"
	for (i = 1; i <= nsec; i++) {
		s = order[i]
		if (type[s] != "rule") continue
		g = one(s, "group"); u = one(s, "upstream"); a = one(s, "action")
		if ((g != "") + (u != "") + (a != "") != 1) {
			err(where(s, ""), "a rule needs exactly one of group, upstream or action")
			continue
		}
		if (!((s SUBSEP "domain") in cnt) && !((s SUBSEP "qtype") in cnt) && !((s SUBSEP "client") in cnt)) {
			err(where(s, ""), "a rule needs a domain, qtype or client to match")
			continue
		}
		r = "\n[[rules]]\n"
		if ((s SUBSEP "domain") in cnt) r = r "domains = " toml_list(s, "domain") "\n"
		if ((s SUBSEP "qtype") in cnt) r = r "qtypes = " toml_list(s, "qtype") "\n"
		if ((s SUBSEP "client") in cnt) r = r "clients = " toml_list(s, "client") "\n"
		if (u != "") {
			if (!(("upstream", u) in named)) { err(where(s, "upstream"), "no upstream named " u); continue }
			g = "split_" u
			if (("group", g) in named) { err(where(s, "upstream"), "a group is already named " g); continue }
			if (!(g in made)) {
				made[g] = 1
				out = out "\n[groups." g "]\nupstreams = [" q(u) "]\nstrategy = \"failover\"\n"
			}
		} else if (g != "" && g != "default" && !(("group", g) in named)) {
			err(where(s, "group"), "no group named " g)
			continue
		}
		r = r (a != "" ? "action = " q(a) : "group = " q(g)) "\n"
		rules = rules r
	}
	if (nerr) exit 1
	printf "%s%s", out, rules
}
