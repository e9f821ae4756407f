#!/usr/bin/env python3
"""
The agents' CPU per small incremental, by thread (issue 16): pipe incremental-latency.js's output
through this. At each "incremental … k/N" line it reads /proc/<agent>/task/*/stat of every agent
process whose command line ends with MAIN and contains TAG, and at the end prints the CPU-ms per
incremental over runs 3..N by thread group — main (the JS thread), librados (msgr-worker-*,
io_context_pool), workers (the other threads named "node": V8's compiler and GC helpers, libuv's
pool), other — and the agents' peak RSS. The first agent started (lower pid) is the source.

  RBDBACKUP_DAEMONS_DIST=/path/to/build/dist node dist/test/bench/incremental-latency.js --mib 256 \
    --runs 12 --only incremental --incr-sizes 256 2>&1 \
    | python3 test/bench/agent-threads.py /path/to/build/ agents/agent/main.js
"""
import os,sys,re,collections
tag=sys.argv[1]; main=sys.argv[2].encode(); hwm={}; hz=os.sysconf('SC_CLK_TCK')
def snap():
    out={}
    for p in os.listdir('/proc'):
        if not p.isdigit(): continue
        try: c=open(f'/proc/{p}/cmdline','rb').read().split(b'\0')
        except: continue
        if not any(x.endswith(main) and tag.encode() in x for x in c): continue
        try: hwm[int(p)]=int([l for l in open(f'/proc/{p}/status') if l.startswith('VmHWM')][0].split()[1])//1024
        except: pass
        g=collections.Counter()
        for t in os.listdir(f'/proc/{p}/task'):
            try:
                st=open(f'/proc/{p}/task/{t}/stat').read(); comm=st[st.index('(')+1:st.rindex(')')]
                f=st[st.rindex(')')+2:].split(); cpu=(int(f[11])+int(f[12]))/hz
            except: continue
            k='main' if t==p else ('workers' if comm=='node' else ('librados' if comm.startswith(('msgr','io_context')) else 'other'))
            g[k]+=cpu
        out[int(p)]=g
    return out
prev=snap(); acc=collections.defaultdict(collections.Counter); n=0
for line in sys.stdin:
    sys.stdout.write(line); sys.stdout.flush()
    m=re.match(r'incremental \d+ MiB (\d+)/(\d+)',line)
    if not m: continue
    cur=snap()
    if int(m.group(1))>=3:
        n+=1
        for p,g in cur.items():
            for k in g: acc[p][k]+=g[k]-prev.get(p,{}).get(k,0)
    prev=cur
for i,(p,g) in enumerate(sorted(acc.items())):
    print(f"PER-RUN {tag} {'source' if i==0 else 'destination'} over {n} runs, CPU-ms per incremental: "+' '.join(f"{k} {v*1000/n:.0f}" for k,v in sorted(g.items()))+f" total {sum(g.values())*1000/n:.0f}; peak RSS {hwm.get(p)} MiB")
