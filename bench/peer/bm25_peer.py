#!/usr/bin/env python3
"""The retrieval-quality peer: a tuned BM25 (bm25s, English stop words, Snowball English stemmer,
k1 = 1.5, b = 0.75, OR semantics) over a SMART-format collection, as a user would set it up.

    python3 bench/peer/bm25_peer.py COLLECTION_DIR RUN.json [METHOD]

Reads the collection's *.ALL (documents: .I id, .T title, .W text) and *.QRY (queries: .I id,
.T title where there is one, .W text) files, indexes "{title}\n\n{text}" per document, retrieves the top 50 documents of
every query and writes the run as JSON: query id -> ranked document ids (best first). Documents
with a score of 0 (no query term) are left out. METHOD is bm25s's scoring variant, default
"lucene". Exits with status 2, printing how to install, if bm25s or PyStemmer is missing.
"""

import json
import sys
from pathlib import Path

TOP = 50


def records(path):
    """SMART records: (id, {field letter: text}); a field runs from its `.X` line to the next."""
    current, field, out = None, None, []
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.startswith(".") and len(line) >= 2 and line[1].isascii() and line[1].isalpha() and (
            len(line) == 2 or line[2] == " "
        ):
            if line[1] == "I":
                current = (line[2:].strip(), {})
                out.append(current)
                field = None
            else:
                field = line[1]
                rest = line[2:].strip()
                if current is not None:
                    current[1].setdefault(field, [])
                    if rest:
                        current[1][field].append(rest)
        elif current is not None and field is not None:
            current[1][field].append(line)
    return [(i, {k: "\n".join(v).strip() for k, v in f.items()}) for i, f in out]


def one(directory, suffix):
    found = sorted(p for p in directory.iterdir() if p.name.upper().endswith(suffix))
    if len(found) != 1:
        sys.exit(f"{directory}: expected one *{suffix} file, found {len(found)}")
    return found[0]


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    directory, out = Path(sys.argv[1]), Path(sys.argv[2])
    method = sys.argv[3] if len(sys.argv) == 4 else "lucene"
    try:
        import bm25s
        import Stemmer
    except ImportError as missing:
        print(
            f"the peer needs bm25s and PyStemmer ({missing}): pip install bm25s PyStemmer",
            file=sys.stderr,
        )
        sys.exit(2)

    documents = records(one(directory, ".ALL"))
    queries = [
        (i, f"{f.get('T', '').strip()}\n{f.get('W', '').strip()}".strip())
        for i, f in records(one(directory, ".QRY"))
    ]
    texts = [f"{f.get('T', '')}\n\n{f.get('W', '')}" for _, f in documents]
    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25(k1=1.5, b=0.75, method=method)
    retriever.index(
        bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False),
        show_progress=False,
    )
    tokens = bm25s.tokenize(
        [q for _, q in queries],
        stopwords="en",
        stemmer=stemmer,
        return_ids=False,
        show_progress=False,
    )
    ranked, scores = retriever.retrieve(
        tokens, k=min(TOP, len(documents)), show_progress=False, n_threads=1
    )
    run = {
        qid: [documents[d][0] for d, s in zip(row, row_scores) if s > 0]
        for (qid, _), row, row_scores in zip(queries, ranked.tolist(), scores.tolist())
    }
    out.write_text(json.dumps(run) + "\n")
    print(
        f"bm25s {bm25s.__version__} ({method}): {len(documents)} documents, {len(queries)} queries"
    )


if __name__ == "__main__":
    main()
