// Command hello is the node tests' workload: the only file of its image. It
// prints one line naming the image it was built into and exits 0.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Printf("hello from %s\n", os.Getenv("HELLO_IMAGE"))
}
