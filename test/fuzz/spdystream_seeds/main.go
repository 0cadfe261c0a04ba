// Command spdystream_seeds writes SPDY/3.1 byte streams with moby/spdystream's
// Framer, the implementation Kubernetes peers use, as seed material for the
// SPDY fuzz corpora. Each file is one direction of a connection, so its header
// blocks share one zlib stream. build_fuzzers.sh seed runs it when Go and the
// Debian spdystream sources are installed:
//
//	apt-get install golang-go golang-github-docker-spdystream-dev
//	GO111MODULE=off GOPATH=/usr/share/gocode go run main.go OUT_DIR
//
// Header values and stream ids follow what client-go and kubelet send for
// exec and port-forward (streamType, port, requestID).
package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/moby/spdystream/spdy"
)

type session struct {
	name   string
	frames []spdy.Frame
}

func headers(pairs ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(pairs); i += 2 {
		h.Add(pairs[i], pairs[i+1])
	}
	return h
}

func sessions() []session {
	// The client side of `kubectl exec -i -t` with the v4 protocol: the error,
	// stdin, stdout and resize streams, input, a resize, stdin's half-close,
	// and a ping.
	execClient := session{"exec_client", []spdy.Frame{
		&spdy.SynStreamFrame{StreamId: 1, Headers: headers("streamType", "error")},
		&spdy.SynStreamFrame{StreamId: 3, Headers: headers("streamType", "stdin")},
		&spdy.SynStreamFrame{StreamId: 5, Headers: headers("streamType", "stdout")},
		&spdy.SynStreamFrame{StreamId: 7, Headers: headers("streamType", "resize")},
		&spdy.DataFrame{StreamId: 7, Data: []byte(`{"Width":80,"Height":24}`)},
		&spdy.DataFrame{StreamId: 3, Data: []byte("ls -l\n")},
		&spdy.DataFrame{StreamId: 3, Flags: spdy.DataFlagFin},
		&spdy.PingFrame{Id: 1},
		&spdy.RstStreamFrame{StreamId: 5, Status: spdy.Cancel},
		&spdy.GoAwayFrame{LastGoodStreamId: 0, Status: spdy.GoAwayOK},
	}}
	// The server side of the same exchange: replies, output, the status on the
	// error stream, half-closes, a ping echo.
	execServer := session{"exec_server", []spdy.Frame{
		&spdy.SynReplyFrame{StreamId: 1},
		&spdy.SynReplyFrame{StreamId: 3},
		&spdy.SynReplyFrame{StreamId: 5},
		&spdy.SynReplyFrame{StreamId: 7},
		&spdy.DataFrame{StreamId: 5, Data: []byte("total 0\r\n")},
		&spdy.DataFrame{StreamId: 5, Flags: spdy.DataFlagFin},
		&spdy.DataFrame{StreamId: 1, Data: []byte(`{"metadata":{},"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}`)},
		&spdy.DataFrame{StreamId: 1, Flags: spdy.DataFlagFin},
		&spdy.PingFrame{Id: 1},
		&spdy.GoAwayFrame{LastGoodStreamId: 7, Status: spdy.GoAwayOK},
	}}
	// Port-forward: two error+data pairs, data both ways, one pair reset.
	portForward := session{"portforward_client", []spdy.Frame{
		&spdy.SynStreamFrame{StreamId: 1, Headers: headers("streamType", "error", "port", "8080", "requestID", "0")},
		&spdy.SynStreamFrame{StreamId: 3, Headers: headers("streamType", "data", "port", "8080", "requestID", "0")},
		&spdy.DataFrame{StreamId: 3, Data: []byte("GET / HTTP/1.0\r\n\r\n")},
		&spdy.SynStreamFrame{StreamId: 5, Headers: headers("streamType", "error", "port", "5000", "requestID", "1")},
		&spdy.SynStreamFrame{StreamId: 7, Headers: headers("streamType", "data", "port", "5000", "requestID", "1")},
		&spdy.RstStreamFrame{StreamId: 7, Status: spdy.Cancel},
		&spdy.RstStreamFrame{StreamId: 5, Status: spdy.Cancel},
		&spdy.DataFrame{StreamId: 3, Flags: spdy.DataFlagFin},
	}}
	// Every frame type spdystream can write, with the less common flags and
	// fields set.
	everyType := session{"every_type", []spdy.Frame{
		&spdy.SynStreamFrame{CFHeader: spdy.ControlFrameHeader{Flags: spdy.ControlFlagUnidirectional},
			StreamId: 2, AssociatedToStreamId: 1, Priority: 7,
			Headers: headers("X-Multi", "one", "X-Multi", "two", "Empty", "", "Content-Type", "text/plain")},
		&spdy.SynReplyFrame{CFHeader: spdy.ControlFrameHeader{Flags: spdy.ControlFlagFin}, StreamId: 1,
			Headers: headers(":status", "200", ":version", "HTTP/1.1")},
		&spdy.HeadersFrame{CFHeader: spdy.ControlFrameHeader{Flags: spdy.ControlFlagFin}, StreamId: 2,
			Headers: headers("X-Trailer", "done")},
		&spdy.RstStreamFrame{StreamId: 9, Status: spdy.FrameTooLarge},
		&spdy.SettingsFrame{CFHeader: spdy.ControlFrameHeader{Flags: spdy.ControlFlagSettingsClearSettings},
			FlagIdValues: []spdy.SettingsFlagIdValue{
				{Flag: spdy.FlagSettingsPersistValue, Id: spdy.SettingsMaxConcurrentStreams, Value: 100},
				{Flag: spdy.FlagSettingsPersisted, Id: spdy.SettingsInitialWindowSize, Value: 65536},
			}},
		&spdy.SettingsFrame{},
		&spdy.PingFrame{Id: 0xFFFFFFFF},
		&spdy.WindowUpdateFrame{StreamId: 0, DeltaWindowSize: 0x7FFFFFFF},
		&spdy.WindowUpdateFrame{StreamId: 3, DeltaWindowSize: 1},
		&spdy.DataFrame{StreamId: 2, Data: bytes.Repeat([]byte{0, 1, 0xFF}, 300)},
		&spdy.GoAwayFrame{LastGoodStreamId: 0x7FFFFFFF, Status: spdy.GoAwayInternalError},
	}}
	return []session{execClient, execServer, portForward, everyType}
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: spdystream_seeds OUT_DIR")
		os.Exit(2)
	}
	for _, s := range sessions() {
		var wire bytes.Buffer
		framer, err := spdy.NewFramer(&wire, &wire)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for _, frame := range s.frames {
			if err := framer.WriteFrame(frame); err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", s.name, err)
				os.Exit(1)
			}
		}
		path := filepath.Join(os.Args[1], "spdystream_"+s.name+".spdy")
		if err := os.WriteFile(path, wire.Bytes(), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
