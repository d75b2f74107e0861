// Command reference-oracle answers, for each image reference it reads, what
// github.com/distribution/reference's ParseNormalizedNamed (the parser Docker,
// containerd and the kubelet use) makes of it. The differential test of
// webhook/core/images.py compares our parser with these answers.
//
// Input: one JSON string per line. Output: one JSON object per line, in order:
// {"ok":true,"domain":...,"path":...,"tag":...,"digest":...} or {"ok":false,"error":...}.
package main

import (
	"bufio"
	_ "crypto/sha256" // go-digest offers an algorithm only if its hash is linked in, as in Docker and the kubelet
	_ "crypto/sha512" // sha384 and sha512
	"encoding/json"
	"fmt"
	"os"

	"github.com/distribution/reference"
)

type answer struct {
	OK     bool    `json:"ok"`
	Domain string  `json:"domain,omitempty"`
	Path   string  `json:"path,omitempty"`
	Tag    *string `json:"tag,omitempty"`
	Digest *string `json:"digest,omitempty"`
	Error  string  `json:"error,omitempty"`
}

func decide(image string) answer {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return answer{Error: err.Error()}
	}
	result := answer{OK: true, Domain: reference.Domain(named), Path: reference.Path(named)}
	if tagged, ok := named.(reference.Tagged); ok {
		tag := tagged.Tag()
		result.Tag = &tag
	}
	if digested, ok := named.(reference.Digested); ok {
		digest := digested.Digest().String()
		result.Digest = &digest
	}
	return result
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	out := bufio.NewWriter(os.Stdout)
	encoder := json.NewEncoder(out)
	for in.Scan() {
		var image string
		if err := json.Unmarshal(in.Bytes(), &image); err != nil {
			fmt.Fprintf(os.Stderr, "reference-oracle: line is not a JSON string: %v\n", err)
			os.Exit(2)
		}
		if err := encoder.Encode(decide(image)); err != nil {
			fmt.Fprintf(os.Stderr, "reference-oracle: %v\n", err)
			os.Exit(2)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "reference-oracle: %v\n", err)
		os.Exit(2)
	}
	if err := out.Flush(); err != nil {
		os.Exit(2)
	}
}
