// A DDS participant for the citadel acceptance test (edge/tests/netns/ros.rs), built by
// the test with g++ against Debian's libfastrtps-dev (Fast DDS 2.x).
//
//   participant pub TOPIC ADDRESS        publish "sample N" every 100 ms until killed
//   participant sub TOPIC ADDRESS COUNT  print each sample; exit 0 after COUNT of them
//
// It behaves like a ROS 2 node under rmw_fastrtps: it is a discovery-server client when
// ROS_DISCOVERY_SERVER is set (Fast DDS applies the variable to a participant with the
// default, SIMPLE, discovery protocol) and joins domain ROS_DOMAIN_ID. Its only transport
// is UDPv4 on ADDRESS (the node's virtual IP): no shared memory, which would connect two
// processes on one machine whatever their network namespaces, and no other interface, so
// every packet it exchanges crosses the mesh.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include <fastdds/dds/domain/DomainParticipant.hpp>
#include <fastdds/dds/domain/DomainParticipantFactory.hpp>
#include <fastdds/dds/publisher/DataWriter.hpp>
#include <fastdds/dds/publisher/Publisher.hpp>
#include <fastdds/dds/subscriber/DataReader.hpp>
#include <fastdds/dds/subscriber/DataReaderListener.hpp>
#include <fastdds/dds/subscriber/SampleInfo.hpp>
#include <fastdds/dds/subscriber/Subscriber.hpp>
#include <fastdds/dds/topic/TopicDataType.hpp>
#include <fastdds/rtps/transport/UDPv4TransportDescriptor.h>

using namespace eprosima::fastdds::dds;
using eprosima::fastrtps::rtps::SerializedPayload_t;
using eprosima::fastrtps::rtps::InstanceHandle_t;

struct Text {
    std::string value;
};

// A CDR string: encapsulation header, length (with the NUL), bytes, NUL.
class TextType : public TopicDataType {
public:
    TextType() {
        setName("bauxite::Text");
        m_typeSize = 4 + 4 + 256;
        m_isGetKeyDefined = false;
    }
    bool serialize(void* data, SerializedPayload_t* payload) override {
        const auto* text = static_cast<Text*>(data);
        const uint32_t len = static_cast<uint32_t>(text->value.size() + 1);
        if (8 + len > payload->max_size) return false;
        const unsigned char header[4] = {0, 1, 0, 0};  // CDR little endian
        std::memcpy(payload->data, header, 4);
        std::memcpy(payload->data + 4, &len, 4);
        std::memcpy(payload->data + 8, text->value.c_str(), len);
        payload->length = 8 + len;
        payload->encapsulation = CDR_LE;
        return true;
    }
    bool deserialize(SerializedPayload_t* payload, void* data) override {
        if (payload->length < 8) return false;
        uint32_t len = 0;
        std::memcpy(&len, payload->data + 4, 4);
        if (len == 0 || 8 + len > payload->length) return false;
        static_cast<Text*>(data)->value.assign(reinterpret_cast<char*>(payload->data + 8), len - 1);
        return true;
    }
    std::function<uint32_t()> getSerializedSizeProvider(void* data) override {
        return [data]() { return static_cast<uint32_t>(8 + static_cast<Text*>(data)->value.size() + 1); };
    }
    void* createData() override { return new Text(); }
    void deleteData(void* data) override { delete static_cast<Text*>(data); }
    bool getKey(void*, InstanceHandle_t*, bool) override { return false; }
};

class Reader : public DataReaderListener {
public:
    explicit Reader(int wanted) : wanted_(wanted) {}
    void on_subscription_matched(DataReader*, const SubscriptionMatchedStatus& info) override {
        std::printf("matched %d\n", info.current_count);
        std::fflush(stdout);
    }
    void on_data_available(DataReader* reader) override {
        Text text;
        SampleInfo info;
        while (reader->take_next_sample(&text, &info) == ReturnCode_t::RETCODE_OK) {
            if (!info.valid_data) continue;
            std::printf("received %s\n", text.value.c_str());
            std::fflush(stdout);
            if (++received_ >= wanted_) std::_Exit(0);
        }
    }
private:
    int wanted_;
    int received_ = 0;
};

int main(int argc, char** argv) {
    if (argc < 4 || (std::strcmp(argv[1], "sub") == 0 && argc < 5)) {
        std::fprintf(stderr, "usage: %s pub TOPIC ADDRESS | sub TOPIC ADDRESS COUNT\n", argv[0]);
        return 2;
    }
    const bool publish = std::strcmp(argv[1], "pub") == 0;
    const char* domain_env = std::getenv("ROS_DOMAIN_ID");
    const int domain = domain_env ? std::atoi(domain_env) : 0;

    DomainParticipantQos qos = PARTICIPANT_QOS_DEFAULT;
    qos.transport().use_builtin_transports = false;
    auto udp = std::make_shared<eprosima::fastdds::rtps::UDPv4TransportDescriptor>();
    udp->interfaceWhiteList.push_back(argv[3]);
    qos.transport().user_transports.push_back(udp);
    DomainParticipant* participant =
        DomainParticipantFactory::get_instance()->create_participant(domain, qos);
    if (participant == nullptr) {
        std::fprintf(stderr, "cannot create the participant\n");
        return 1;
    }
    TypeSupport type(new TextType());
    type.register_type(participant);
    Topic* topic = participant->create_topic(argv[2], type.get_type_name(), TOPIC_QOS_DEFAULT);
    if (topic == nullptr) return 1;

    if (publish) {
        Publisher* publisher = participant->create_publisher(PUBLISHER_QOS_DEFAULT);
        DataWriter* writer = publisher->create_datawriter(topic, DATAWRITER_QOS_DEFAULT);
        if (writer == nullptr) return 1;
        std::printf("publishing on %s in domain %d\n", argv[2], domain);
        std::fflush(stdout);
        for (unsigned long n = 0;; ++n) {
            Text text{"sample " + std::to_string(n)};
            writer->write(&text);
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    }
    Reader listener(std::atoi(argv[4]));
    Subscriber* subscriber = participant->create_subscriber(SUBSCRIBER_QOS_DEFAULT);
    DataReader* reader = subscriber->create_datareader(topic, DATAREADER_QOS_DEFAULT, &listener);
    if (reader == nullptr) return 1;
    std::printf("subscribed to %s in domain %d\n", argv[2], domain);
    std::fflush(stdout);
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
}
